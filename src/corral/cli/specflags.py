"""One way to turn a spec file plus flags into a spec, for every noun (`job run`, `endpoint
deploy|update`, and those to come): the file is loaded by `corral.spec.loader`, the flags
are merged over it, and each error names what the user typed — the flag that set a field,
else the file and the field.

A noun declares its flags as a frozen dataclass that mixes in `SpecFlags` (the fields carry
their typer options, see `options.takes_flags`) and a map from spec field to flag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.spec.errors import FieldError

SPEC_SUFFIXES = (".yaml", ".yml", ".json")

S = TypeVar("S")


def looks_like_spec_file(arg: str) -> bool:
    return arg.endswith(SPEC_SUFFIXES) or os.path.isfile(arg)


class SpecFlags:
    """The flags every spec-shaping command has; None (or an empty list) means "not given".
    A subclass is a frozen dataclass that declares these fields and its own."""

    # Which flag sets which spec field (a field, or a field and everything under it).
    FLAG_FOR_PATH: ClassVar[dict[str, str]]

    gpus: str | None
    cpus: float | None
    memory: str | None
    env: list[str]

    def top_level(self) -> dict[str, Any]:
        """The spec's top-level fields these flags replace."""
        return {}

    def sections(self) -> dict[str, dict[str, Any]]:
        """The spec's mappings these flags merge into, key by key."""
        return {"resources": self.resources()}

    def resources(self) -> dict[str, Any]:
        values = {"gpus": self.gpus, "cpus": self.cpus, "memory": self.memory}
        return {k: v for k, v in values.items() if v is not None}

    def paths(self) -> set[str]:
        """The spec fields these flags set, as error paths."""
        paths = set(self.top_level())
        for section, values in self.sections().items():
            paths |= {f"{section}.{k}" for k in values}
        if self.env:
            paths.add("env")
        return paths

    def given(self) -> bool:
        return bool(self.paths())

    def merge_into(self, data: dict[str, Any], env: dict[str, str]) -> None:
        """Write these flags (`env`: their --env, parsed) over a spec's data (a dumped
        spec, or {})."""
        data.update(self.top_level())
        for section, values in self.sections().items():
            if values:
                data[section] = {**data.get(section, {}), **values}
        if env:
            data["env"] = {**data.get("env", {}), **env}

    def flag_for(self, path: str) -> str | None:
        for prefix, flag in self.FLAG_FOR_PATH.items():
            if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                return flag
        return None


def parse_env(items: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`K=V` sets K; a bare `K` passes this shell's value of K on, as `docker run -e K` does."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in environ:
                raise CliError(
                    f"--env {key}: {key} is not set in this shell; use --env {key}=VALUE", code=2
                )
            value = environ[key]
        env[key] = value
    return env


def validate(
    parse: Callable[[Any, str], S],
    data: dict[str, Any],
    path: str | None,
    flags: SpecFlags,
    given: set[str],
) -> S:
    """`parse(data)`, each bad field named by the flag that set it (`given`: the fields
    the flags, NAME or the inline command set), else by the file and the field."""
    from corral.spec.errors import FieldError, SpecError

    try:
        return parse(data, path or "")
    except SpecError as exc:
        named = [FieldError(*_name_error(e, path, flags, given)) for e in exc.errors]
        raise SpecError("", named) from None


def _name_error(
    error: FieldError, path: str | None, flags: SpecFlags, given: set[str]
) -> tuple[str, str]:
    if error.path:
        for field_path in sorted(given):
            if error.path == field_path or error.path.startswith(
                (field_path + ".", field_path + "[")
            ):
                return flags.flag_for(field_path) or field_path, error.message
        return (f"{path}: {error.path}" if path else error.path), error.message
    # A rule across fields ("max_replicas (1) is below min_replicas (2)"): name the flags
    # given among the fields it mentions.
    named = sorted(
        {
            flag
            for p in given
            if (flag := flags.flag_for(p)) is not None
            and re.search(rf"\b{re.escape(p.split('.')[0])}\b", error.message)
        }
    )
    return (", ".join(named) if named else (path or "")), error.message


def check_workspace(noun: str, in_file: str | None, workspace: str | None) -> None:
    """A spec file's `workspace:` and --workspace must agree when both are given."""
    if workspace and in_file and workspace != in_file:
        raise CliError(
            f"the {noun} file says workspace {in_file!r} but --workspace says {workspace!r}",
            code=2,
        )
