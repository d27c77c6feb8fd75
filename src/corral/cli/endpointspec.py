"""Building the EndpointSpec for `corral endpoint deploy|update` from a YAML file, flags, an
inline command after `--`, or `--app FILE.py:Class`.

Every error names what the user typed: the flag, the file and field, or NAME.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from corral.cli.endpointopts import (
    AppOpt,
    AuthOpt,
    MaxOpt,
    MinOpt,
    ReadyPathOpt,
    ReadyTimeoutOpt,
    TargetOpt,
    ToZeroOpt,
)
from corral.cli.options import CpusOpt, EnvOpt, GpusOpt, MemoryOpt
from corral.cli.output import CliError
from corral.cli.specflags import SpecFlags, looks_like_spec_file, parse_env, validate

if TYPE_CHECKING:
    from corral.spec.endpoint import EndpointSpec

# Which flag sets which spec field, so that an error names what the user typed.
_FLAG_FOR_PATH = {
    "name": "NAME",
    "resources.gpus": "--gpus",
    "resources.cpus": "--cpus",
    "resources.memory": "--memory",
    "min_replicas": "--min-replicas",
    "max_replicas": "--max-replicas",
    "target_in_flight": "--target-in-flight",
    "scale_to_zero_after": "--scale-to-zero-after",
    "readiness.path": "--readiness-path",
    "readiness.timeout": "--readiness-timeout",
    "auth": "--auth",
    "env": "--env",
    "app": "--app",
    "command": "the command after `--`",
}

# `$PORT` or `${PORT}` in an inline argument: left for the replica's shell to expand.
_PORT_REF = re.compile(r"\$(?:PORT\b|\{PORT\})")

INLINE_HINT = (
    "corral endpoint deploy NAME --gpus 1 -- vllm serve MODEL --port '$PORT' "
    "(quote $PORT so this shell leaves it alone)"
)


@dataclass(frozen=True)
class EndpointFlags(SpecFlags):
    """The spec-shaping flags of `corral endpoint deploy|update`; None means "not given"."""

    FLAG_FOR_PATH: ClassVar[dict[str, str]] = _FLAG_FOR_PATH

    gpus: GpusOpt = None
    cpus: CpusOpt = None
    memory: MemoryOpt = None
    min_replicas: MinOpt = None
    max_replicas: MaxOpt = None
    target_in_flight: TargetOpt = None
    scale_to_zero_after: ToZeroOpt = None
    readiness_path: ReadyPathOpt = None
    readiness_timeout: ReadyTimeoutOpt = None
    auth: AuthOpt = None
    env: EnvOpt = field(default_factory=list)
    app: AppOpt = None

    def top_level(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_in_flight": self.target_in_flight,
            "scale_to_zero_after": self.scale_to_zero_after,
            "auth": self.auth,
        }
        given = {k: v for k, v in values.items() if v is not None}
        if self.scale_to_zero_after is not None and self.min_replicas is None:
            # Asking to scale to zero is asking for a floor of zero replicas.
            given["min_replicas"] = 0
        return given

    def sections(self) -> dict[str, dict[str, Any]]:
        values = {"path": self.readiness_path, "timeout": self.readiness_timeout}
        readiness = {k: v for k, v in values.items() if v is not None}
        return {**super().sections(), "readiness": readiness}

    def paths(self) -> set[str]:
        # --app is not merged like the others: it replaces the command (see _build).
        return super().paths() | ({"app"} if self.app is not None else set())


def shell_line(argv: list[str]) -> str:
    """The inline argv as one shell line for the replica: each argument quoted as given,
    except `$PORT`, which the replica's shell expands to the port corral chose."""
    if len(argv) == 1 and any(c.isspace() for c in argv[0]):
        return argv[0]  # one quoted argument with spaces is already a shell line
    words = []
    for arg in argv:
        pieces = _PORT_REF.split(arg)
        if len(pieces) == 1:
            words.append(shlex.quote(arg))  # '' for an empty argument: it stays an argument
        else:
            words.append('"${PORT}"'.join(shlex.quote(p) if p else "" for p in pieces))
    return " ".join(words)


def mentions_port(argv: list[str]) -> bool:
    return any("PORT" in arg for arg in argv)


def split_target(positional: list[str]) -> tuple[str | None, str | None]:
    """(spec file, endpoint name) from the positional arguments of `deploy`."""
    if not positional:
        return None, None
    first, rest = positional[0], positional[1:]
    if rest:
        raise CliError(
            f"unexpected arguments after {first}: {' '.join(rest)}",
            code=2,
            hint="put the command after `--`: " + INLINE_HINT,
        )
    if looks_like_spec_file(first):
        return first, None
    return None, first


def build_deploy_spec(
    positional: list[str],
    inline_argv: list[str] | None,
    flags: EndpointFlags,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> EndpointSpec:
    """`corral endpoint deploy FILE.yaml | NAME [flags] [-- command | --app FILE.py:Class]`."""
    from corral.spec.loader import load_endpoint_spec

    path, name = split_target(positional)
    if path is None and inline_argv is None and flags.app is None:
        raise CliError(
            "give an endpoint file, or a command after `--`, or --app FILE.py:Class",
            code=2,
            hint=INLINE_HINT,
        )
    base = load_endpoint_spec(path) if path is not None else None
    return _build(base, path, name, inline_argv, flags, environ, cwd)


def build_update_spec(
    name: str,
    positional: list[str],
    inline_argv: list[str] | None,
    flags: EndpointFlags,
    current: Callable[[], EndpointSpec],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> EndpointSpec:
    """`corral endpoint update NAME FILE.yaml | [flags] [-- command]`: a file replaces the
    spec; flags and a command change the current spec (from `current()`) where they say."""
    from corral.spec.loader import load_endpoint_spec

    path, stray = split_target(positional)
    if stray is not None:
        raise CliError(f"{stray!r} is not an endpoint file (.yaml)", code=2)
    if path is None and inline_argv is None and not flags.given():
        raise CliError(
            f"nothing to change: give a file, flags or a command after `--` for {name}",
            code=2,
            hint=f"corral endpoint update {name} endpoint.yaml, or e.g. --max-replicas 4",
        )
    if path is not None:
        base = load_endpoint_spec(path)
        if base.name is not None and base.name != name:
            raise CliError(
                f"{path} describes endpoint {base.name!r}, not {name!r}",
                code=2,
                hint="remove `name:` from the file or update the endpoint it names",
            )
    else:
        base = current()
    return _build(base, path, name, inline_argv, flags, environ, cwd)


def _build(
    base: EndpointSpec | None,
    path: str | None,
    name: str | None,
    inline_argv: list[str] | None,
    flags: EndpointFlags,
    environ: Mapping[str, str] | None,
    cwd: Path | None,
) -> EndpointSpec:
    if inline_argv is not None and flags.app is not None:
        raise CliError("give a command after `--` or --app, not both", code=2)
    if inline_argv is not None and not inline_argv:
        raise CliError("nothing to run after `--`", code=2, hint=INLINE_HINT)
    from corral.spec.loader import parse_endpoint_spec

    env = parse_env(flags.env, os.environ if environ is None else environ)
    # A dumped spec writes sizes as "NMi" and durations as seconds: it parses back the same.
    data = base.model_dump(mode="json", exclude_none=True) if base is not None else {}
    given = flags.paths()
    if name is not None:
        data["name"] = name
        given.add("name")
    if inline_argv is not None or flags.app is not None:
        for key in ("command", "entrypoint", "args", "app"):
            data.pop(key, None)
        if inline_argv is not None:
            data["command"] = shell_line(inline_argv)
            given.add("command")
        else:
            data["app"] = flags.app
    flags.merge_into(data, env)
    spec = validate(parse_endpoint_spec, data, path, flags, given)
    return _with_local_app(spec, path, given, cwd or Path.cwd())


def _with_local_app(
    spec: EndpointSpec, path: str | None, given: set[str], cwd: Path
) -> EndpointSpec:
    """An `app` file path made absolute, so a replica (which runs in a directory of its own)
    finds it: relative to here, else to the spec file. Left alone when the spec sets a
    working_dir (the path is the node's then) or names a module (pkg.mod:Class)."""
    if spec.app is None or spec.working_dir is not None:
        return spec
    if "app" not in given and path is None:
        return spec  # the current spec of an update: resolved when it was deployed
    module_ref, _, attr = spec.app.rpartition(":")
    if not (module_ref.endswith(".py") or "/" in module_ref) or Path(module_ref).is_absolute():
        return spec
    bases = [cwd] + ([Path(path).resolve().parent] if path is not None else [])
    for base in bases:
        candidate = base / module_ref
        if candidate.is_file():
            return spec.model_copy(update={"app": f"{candidate.resolve()}:{attr}"})
    where = "--app" if "app" in given else (f"{path}: app" if path else "app")
    tried = " or ".join(str(b) for b in bases)
    raise CliError(
        f"{where}: no file {module_ref} in {tried}",
        code=2,
        hint="give the path of the app file; every node must see it at that same path",
    )
