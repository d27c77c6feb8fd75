"""Loading specs from YAML with errors that point at each bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from corral.spec.endpoint import EndpointSpec
from corral.spec.errors import FieldError, SpecError, field_errors
from corral.spec.job import JobSpec


def parse_job_spec(data: Any, source: str = "") -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(
            source, [FieldError("", "expected a mapping of job fields at the top level")]
        )
    data = {k: v for k, v in data.items() if k != "kind"} if data.get("kind") == "job" else data
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, field_errors(exc)) from None


def parse_endpoint_spec(data: Any, source: str = "") -> EndpointSpec:
    if not isinstance(data, dict):
        raise SpecError(source, [FieldError("", "expected a mapping of endpoint fields")])
    kind = data.get("kind", "endpoint")
    if kind != "endpoint":
        hint = " (run it with `corral job run`)" if kind == "job" else ""
        raise SpecError(source, [FieldError("kind", f"{kind!r} is not an endpoint{hint}")])
    data = {k: v for k, v in data.items() if k != "kind"}
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, field_errors(exc)) from None


def load_spec_data(path: str | Path) -> Any:
    """A spec file's YAML (or JSON) document, unchecked; a SpecError naming the file if it
    cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [FieldError("", f"cannot read file: {exc.strerror}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(path), [FieldError("", f"invalid YAML: {where}{problem}")]) from None


def load_job_spec(path: str | Path) -> JobSpec:
    return parse_job_spec(load_spec_data(path), str(Path(path)))


def load_endpoint_spec(path: str | Path) -> EndpointSpec:
    return parse_endpoint_spec(load_spec_data(path), str(Path(path)))
