"""Building the JobSpec for `corral job run` from a YAML file, flags and an inline command."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.spec import JobSpec

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")

# Which flag sets which spec field, so that an error names what the user typed.
_FLAG_FOR_PATH = {
    "name": "--name",
    "resources.gpus": "--gpus",
    "resources.cpus": "--cpus",
    "resources.memory": "--memory",
    "replicas": "--replicas",
    "max_restarts": "--max-restarts",
    "priority": "--priority",
    "preemptible": "--preemptible",
    "topology": "--topology",
    "max_runtime": "--max-runtime",
    "node_selector": "--selector",
    "env": "--env",
    "secrets": "--secret",
}

INLINE_HINT = "put the command after `--`, e.g. corral job run --gpus 1 -- python train.py"


@dataclass(frozen=True)
class RunFlags:
    """The spec-shaping flags of `corral job run`; None means "not given"."""

    name: str | None = None
    gpus: str | None = None
    cpus: float | None = None
    memory: str | None = None
    replicas: int | None = None
    max_restarts: int | None = None
    priority: str | None = None  # a number or a class name; the spec checks which
    preemptible: bool | None = None
    topology: str | None = None
    max_runtime: str | None = None
    selector: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    secret: list[str] = field(default_factory=list)  # ENV=NAME of a workspace secret

    def top_level(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": self.name,
            "replicas": self.replicas,
            "max_restarts": self.max_restarts,
            "priority": self.priority,
            "preemptible": self.preemptible,
            "topology": self.topology,
            "max_runtime": self.max_runtime,
        }
        if self.selector:
            values["node_selector"] = parse_selector(self.selector)
        if self.secret:
            values["secrets"] = parse_secrets(self.secret)
        return {k: v for k, v in values.items() if v is not None}

    def resources(self) -> dict[str, Any]:
        values = {"gpus": self.gpus, "cpus": self.cpus, "memory": self.memory}
        return {k: v for k, v in values.items() if v is not None}

    def given(self) -> bool:
        return bool(self.top_level() or self.resources() or self.env)


def parse_secrets(items: list[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key or not name:
            raise CliError(
                f"--secret {item!r}: expected ENV=SECRET, e.g. --secret HF_TOKEN=hf-token "
                "(a secret stored with `corral secret set`)",
                code=2,
            )
        secrets[key] = name
    return secrets


def parse_selector(items: list[str]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--selector {item!r}: expected LABEL=VALUE, e.g. rack=r12", code=2)
        selector[key] = value
    return selector


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


def command_fields(argv: list[str]) -> dict[str, Any]:
    """Inline argv → spec fields: one argument with spaces is a shell line, else an argv."""
    if not argv:
        raise CliError("nothing to run after `--`", code=2, hint=INLINE_HINT)
    if len(argv) == 1 and any(c.isspace() for c in argv[0]):
        return {"command": argv[0]}
    return {"entrypoint": list(argv)}


def spec_file(positional: list[str], inline: bool) -> str | None:
    """The spec file among the positional arguments, or a clear error for anything else."""
    if not positional:
        if inline:
            return None
        raise CliError(
            "give a job file or a command",
            code=2,
            hint="corral job run train.yaml, or " + INLINE_HINT,
        )
    looks_like_file = positional[0].endswith(_SPEC_SUFFIXES) or os.path.isfile(positional[0])
    if len(positional) == 1 and looks_like_file:
        return positional[0]
    if looks_like_file:
        raise CliError(
            f"unexpected arguments after {positional[0]}: {' '.join(positional[1:])}",
            code=2,
            hint=INLINE_HINT,
        )
    raise CliError(f"{positional[0]!r} is not a job file (.yaml)", code=2, hint=INLINE_HINT)


def build_job_spec(
    positional: list[str],
    inline_argv: list[str] | None,
    flags: RunFlags,
    environ: Mapping[str, str] | None = None,
) -> JobSpec:
    """The spec to submit. Raises SpecError naming each bad field (or flag), CliError."""
    from corral.spec import load_job_spec

    environ = os.environ if environ is None else environ
    path = spec_file(positional, inline=inline_argv is not None)
    env = parse_env(flags.env, environ)
    base = load_job_spec(path) if path is not None else None
    if base is not None and inline_argv is None and not flags.given():
        return base

    # A dumped spec writes sizes as "NMi": it parses back to the same spec.
    data = base.model_dump(mode="json", exclude_none=True) if base is not None else {}
    if inline_argv is not None:
        for key in ("command", "entrypoint", "args"):
            data.pop(key, None)
        data.update(command_fields(inline_argv))
    data.update(flags.top_level())
    if flags.resources():
        data["resources"] = {**data.get("resources", {}), **flags.resources()}
    if env:
        data["env"] = {**data.get("env", {}), **env}
    if flags.secret:
        data["secrets"] = {**(base.secrets if base is not None else {}), **data["secrets"]}
    return _validate(data, path)


def _validate(data: dict[str, Any], path: str | None) -> JobSpec:
    from corral.spec import FieldError, SpecError, parse_job_spec

    try:
        return parse_job_spec(data, path or "")
    except SpecError as exc:
        # The file was valid on its own, so a bad field now comes from a flag: name the flag.
        named = []
        for e in exc.errors:
            flag = _flag_for(e.path)
            where = flag or (f"{path}: {e.path}" if path and e.path else path or e.path)
            named.append(FieldError(where, e.message))
        raise SpecError("", named) from None


def _flag_for(path: str) -> str | None:
    for prefix, flag in _FLAG_FOR_PATH.items():
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return flag
    return None
