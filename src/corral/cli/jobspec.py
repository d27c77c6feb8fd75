"""Building the JobSpec for `corral job run` from a YAML file, flags and an inline command."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer

from corral.cli.options import CpusOpt, EnvOpt, GpusOpt, MemoryOpt
from corral.cli.output import CliError
from corral.cli.specflags import SpecFlags, looks_like_spec_file, parse_env, validate

if TYPE_CHECKING:
    from corral.spec import JobSpec

INLINE_HINT = "put the command after `--`, e.g. corral job run --gpus 1 -- python train.py"

NameOpt = Annotated[str | None, typer.Option("--name", "-n", help="Job name.", show_default=False)]
ReplicasOpt = Annotated[
    int | None, typer.Option(help="Replicas, placed together as a gang.", show_default=False)
]
MaxRestartsOpt = Annotated[
    int | None, typer.Option(help="Restarts allowed after a failure.", show_default=False)
]
PriorityOpt = Annotated[
    str | None,
    typer.Option(
        help="endpoint, dev, train or batch, or a number -1000..1000; higher runs first.",
        show_default=False,
    ),
]
PreemptibleOpt = Annotated[
    bool | None,
    typer.Option(
        "--preemptible/--not-preemptible",
        help="May be stopped and queued again for higher-priority work, and may borrow "
        "idle GPUs beyond the workspace's quota.",
        show_default=False,
    ),
]
TopologyOpt = Annotated[
    str | None,
    typer.Option(
        help="Widest domain the gang may span: node, rack, zone, region, provider, any.",
        show_default=False,
    ),
]
MaxRuntimeOpt = Annotated[
    str | None, typer.Option(help="Stop it after this long: 90 (s), 30m, 2h.", show_default=False)
]
SelectorOpt = Annotated[
    list[str],
    typer.Option(
        "--selector", help="LABEL=VALUE the node must carry (repeatable).", show_default=False
    ),
]
WorkdirOpt = Annotated[
    str | None,
    typer.Option(
        "--workdir",
        metavar="DIR",
        help="Send this directory with the job (honouring .gitignore and .corralignore); "
        "every replica starts in a copy. Default: the current directory when it is a "
        "project (has .git, pyproject.toml, requirements.txt, setup.py or .corralignore).",
        show_default=False,
    ),
]
NoWorkdirOpt = Annotated[
    bool,
    typer.Option("--no-workdir", help="Send no working directory, whatever the file says."),
]
SetupOpt = Annotated[
    str | None,
    typer.Option(
        "--setup",
        metavar="TEXT",
        help="Shell commands run once per node and environment before the command.",
        show_default=False,
    ),
]
ImageOpt = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="REF",
        help="Run in this container image, on nodes with docker or podman.",
        show_default=False,
    ),
]
PythonOpt = Annotated[
    str | None,
    typer.Option(
        "--python",
        metavar="VER",
        help="Build a Python environment of this version on the node with uv (e.g. 3.11).",
        show_default=False,
    ),
]
RequirementsOpt = Annotated[
    str | None,
    typer.Option(
        "--requirements",
        metavar="FILE",
        help="Install this requirements file of the working directory into the environment.",
        show_default=False,
    ),
]
# The code flags `job run` and `pod create` share (spec/code.py's fields), and what they set.
CODE_FLAG_FOR_PATH = {
    "workdir": "--workdir",
    "setup": "--setup",
    "image": "--image",
    "environment.python": "--python",
    "environment.requirements": "--requirements",
}


def code_environment(python: str | None, requirements: str | None) -> dict[str, Any]:
    """The `environment` keys --python and --requirements set."""
    env = {"python": python, "requirements": requirements}
    return {k: v for k, v in env.items() if v is not None}


SecretOpt = Annotated[
    list[str],
    typer.Option(
        "--secret",
        help="ENV=NAME: set ENV from the workspace secret NAME (`corral secret set`); "
        "the value never passes through this command (repeatable).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class RunFlags(SpecFlags):
    """The spec-shaping flags of `corral job run`; None means "not given"."""

    FLAG_FOR_PATH: ClassVar[dict[str, str]] = {
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
        **CODE_FLAG_FOR_PATH,
    }

    name: NameOpt = None
    gpus: GpusOpt = None
    cpus: CpusOpt = None
    memory: MemoryOpt = None
    replicas: ReplicasOpt = None
    max_restarts: MaxRestartsOpt = None
    priority: PriorityOpt = None  # a number or a class name; the spec checks which
    preemptible: PreemptibleOpt = None
    topology: TopologyOpt = None
    max_runtime: MaxRuntimeOpt = None
    selector: SelectorOpt = field(default_factory=list)
    env: EnvOpt = field(default_factory=list)
    secret: SecretOpt = field(default_factory=list)
    workdir: WorkdirOpt = None
    no_workdir: NoWorkdirOpt = False  # not a field: the CLI drops the spec's workdir
    setup: SetupOpt = None
    image: ImageOpt = None
    python: PythonOpt = None
    requirements: RequirementsOpt = None

    def top_level(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": self.name,
            "workdir": self.workdir,
            "setup": self.setup,
            "image": self.image,
            "replicas": self.replicas,
            "max_restarts": self.max_restarts,
            "priority": self.priority,
            "preemptible": self.preemptible,
            "topology": self.topology,
            "max_runtime": self.max_runtime,
        }
        if self.selector:
            values["node_selector"] = parse_selector(self.selector)
        return {k: v for k, v in values.items() if v is not None}

    def sections(self) -> dict[str, dict[str, Any]]:
        # Secrets add to the file's, as --env does.
        secrets = parse_secrets(self.secret) if self.secret else {}
        environment = code_environment(self.python, self.requirements)
        return {**super().sections(), "secrets": secrets, "environment": environment}


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
    looks_like_file = looks_like_spec_file(positional[0])
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
    from corral.cli.workdir import relative_to_file
    from corral.spec import load_job_spec, parse_job_spec

    path = spec_file(positional, inline=inline_argv is not None)
    env = parse_env(flags.env, os.environ if environ is None else environ)
    base = load_job_spec(path) if path is not None else None
    if base is not None and base.workdir is not None:
        base = base.model_copy(update={"workdir": relative_to_file(path, base.workdir)})
    if base is not None and inline_argv is None and not flags.given():
        return base

    # A dumped spec writes sizes as "NMi": it parses back to the same spec.
    data = base.model_dump(mode="json", exclude_none=True) if base is not None else {}
    if inline_argv is not None:
        for key in ("command", "entrypoint", "args"):
            data.pop(key, None)
        data.update(command_fields(inline_argv))
    flags.merge_into(data, env)
    return validate(parse_job_spec, data, path, flags, flags.paths())
