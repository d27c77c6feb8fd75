"""Loading specs from YAML with errors that point at each bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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


def load_job_spec(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [FieldError("", f"cannot read file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(path), [FieldError("", f"invalid YAML: {where}{problem}")]) from None
    return parse_job_spec(data, str(path))
