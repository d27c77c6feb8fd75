"""`corral pod`: dev pods — create, list, inspect, stop, start, delete; and reach them over SSH
(the commands of cli/podssh.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer

from corral.cli import podssh, sshfiles
from corral.cli.config import state
from corral.cli.inline import InlineCommand
from corral.cli.jobspec import (
    CODE_FLAG_FOR_PATH,
    ImageOpt,
    NoWorkdirOpt,
    PythonOpt,
    RequirementsOpt,
    SetupOpt,
    WorkdirOpt,
    code_environment,
)
from corral.cli.light import LightGroup
from corral.cli.options import CpusOpt, EnvOpt, GpusOpt, JsonOpt, MemoryOpt, WorkspaceOpt
from corral.cli.output import CliError, age, esc, note, out, print_page, print_view, table
from corral.cli.specflags import SpecFlags, check_workspace, parse_env, validate

if TYPE_CHECKING:
    from rich.console import Console

    from corral.client import Client
    from corral.spec.pod import PodSpec
    from corral.wire.pods import PodView

app = typer.Typer(
    cls=LightGroup,
    help="Dev pods: GPUs with your environment, reached with plain ssh, VS Code or Cursor; "
    "stopped when idle.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The pod's name.", show_default=False)]

POD_STATE_STYLE = {
    "pending": "yellow",
    "starting": "cyan",
    "running": "blue",
    "stopping": "yellow",
    "stopped": "dim",
    "failed": "red",
}

VolumeOpt = Annotated[
    list[str],
    typer.Option(
        "--volume",
        "-v",
        help="NAME:/path: mount workspace volume NAME at /path (repeatable).",
        show_default=False,
    ),
]
IdleStopOpt = Annotated[
    str | None,
    typer.Option(
        "--idle-stop",
        help="Stop it after this long with no session and idle GPUs: 30m, 2h, never (default 2h).",
        show_default=False,
    ),
]
JupyterOpt = Annotated[
    bool | None,
    typer.Option(
        "--jupyter",
        help="Start JupyterLab on port 8888 (when installed in the pod).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class PodFlags(SpecFlags):
    """The spec-shaping flags of `corral pod create`; None (or []) means "not given"."""

    FLAG_FOR_PATH: ClassVar[dict[str, str]] = {
        "name": "NAME",
        "resources.gpus": "--gpus",
        "resources.cpus": "--cpus",
        "resources.memory": "--memory",
        "env": "--env",
        "volumes": "--volume",
        "idle_stop": "--idle-stop",
        "jupyter": "--jupyter",
        **CODE_FLAG_FOR_PATH,
    }

    gpus: GpusOpt = None
    cpus: CpusOpt = None
    memory: MemoryOpt = None
    env: EnvOpt = field(default_factory=list)
    volume: VolumeOpt = field(default_factory=list)
    idle_stop: IdleStopOpt = None
    jupyter: JupyterOpt = None
    workdir: WorkdirOpt = None
    no_workdir: NoWorkdirOpt = False  # not a field: the CLI drops the spec's workdir
    setup: SetupOpt = None
    image: ImageOpt = None
    python: PythonOpt = None
    requirements: RequirementsOpt = None

    def top_level(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "idle_stop": self.idle_stop,
            "jupyter": self.jupyter,
            "workdir": self.workdir,
            "setup": self.setup,
            "image": self.image,
        }
        return {k: v for k, v in values.items() if v is not None}

    def sections(self) -> dict[str, dict[str, Any]]:
        return {
            **super().sections(),
            "volumes": parse_volumes(self.volume),
            "environment": code_environment(self.python, self.requirements),
        }

    def paths(self) -> set[str]:
        # A volume's error is the whole mapping's ("volumes"), not one key's.
        return super().paths() | ({"volumes"} if self.volume else set())


def parse_volumes(items: list[str]) -> dict[str, str]:
    volumes: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition(":")
        if not sep or not name or not path:
            raise CliError(f"--volume {item}: expected NAME:/path, e.g. data:/data", code=2)
        volumes[name] = path
    return volumes


def _parse_pod(data: Any, source: str = "") -> PodSpec:
    from pydantic import ValidationError

    from corral.spec.errors import FieldError, SpecError, field_errors
    from corral.spec.pod import PodSpec

    if not isinstance(data, dict):
        raise SpecError(source, [FieldError("", "expected a mapping of pod fields")])
    kind = data.get("kind", "pod")
    if kind != "pod":
        raise SpecError(source, [FieldError("kind", f"{kind!r} is not a pod")])
    try:
        return PodSpec.model_validate({k: v for k, v in data.items() if k != "kind"})
    except ValidationError as exc:
        raise SpecError(source, field_errors(exc)) from None


def build_pod_spec(
    name: str | None,
    file: str | None,
    flags: PodFlags,
    environ: Mapping[str, str] | None = None,
) -> PodSpec:
    """`corral pod create NAME [-f pod.yaml] [flags]`: the file's spec, flags over it."""
    data: dict[str, Any] = {}
    if file is not None:
        from corral.cli.workdir import relative_to_file
        from corral.spec.loader import load_spec_data

        loaded = load_spec_data(file)
        data = dict(loaded) if isinstance(loaded, dict) else loaded
        if isinstance(data, dict) and isinstance(data.get("workdir"), str):
            data["workdir"] = relative_to_file(file, data["workdir"])
        if isinstance(data, dict) and name is not None and data.get("name") not in (None, name):
            raise CliError(
                f"{file} describes pod {data['name']!r}, not {name!r}",
                code=2,
                hint="remove `name:` from the file or create the pod it names",
            )
    given = flags.paths()
    if name is not None and isinstance(data, dict):
        data["name"] = name
        given.add("name")
    if isinstance(data, dict):
        flags.merge_into(data, parse_env(flags.env, os.environ if environ is None else environ))
        if not data.get("name"):
            raise CliError("give the pod a name: corral pod create NAME", code=2)
    return validate(_parse_pod, data, file, flags, given)


# -- rendering ---------------------------------------------------------------------------------


def _state(pod: PodView) -> str:
    style = POD_STATE_STYLE.get(pod.state)
    return f"[{style}]{esc(pod.state)}[/]" if style else esc(pod.state)


def _gpus(pod: PodView) -> str:
    want = pod.spec.resources.gpus
    return str(want) if want.count else "-"


def _idle_at(pod: PodView) -> str:
    if pod.spec.idle_stop is None:
        return "never"
    if pod.idle_stop_at is None:
        return "-"
    import time

    left = pod.idle_stop_at - time.time()
    from corral.cli.output import duration

    return f"in {duration(left)}" if left > 0 else "now"


def render_list(console: Console, pods: list[PodView]) -> None:
    t = table("NAME", "STATE", "NODE", "GPUS", "SESSIONS", "IDLE-STOP-AT", "AGE")
    for pod in pods:
        t.add_row(
            esc(pod.name),
            _state(pod),
            esc(pod.node or "-"),
            _gpus(pod),
            str(pod.sessions),
            _idle_at(pod),
            age(pod.created_at).removesuffix(" ago"),
        )
    console.print(t)


def render_pod(console: Console, pod: PodView) -> None:
    from corral.cli.output import duration

    console.print(f"pod [bold]{esc(pod.name)}[/] in workspace {esc(pod.workspace)}: {_state(pod)}")
    rows = [
        ("node", esc(pod.node or "-")),
        ("gpus", _gpus(pod) + (f" (indices {', '.join(map(str, pod.gpus))})" if pod.gpus else "")),
        ("sessions", str(pod.sessions)),
        ("idle stop", _idle_text(pod)),
        ("created", age(pod.created_at)),
    ]
    if pod.started_at:
        rows.append(("started", age(pod.started_at)))
    if pod.stopped_at:
        rows.append(("stopped", age(pod.stopped_at)))
    if pod.reason:
        rows.append(("reason", esc(pod.reason)))
    if pod.stop_reason:
        rows.append(("stop reason", esc(pod.stop_reason)))
    if pod.jupyter_url:
        rows.append(("jupyter", esc(pod.jupyter_url)))
    if pod.spec.volumes:
        rows.append(("volumes", esc(", ".join(f"{k}:{v}" for k, v in pod.spec.volumes.items()))))
    for label, value in rows:
        console.print(f"  {label + ':':<13}{value}")
    if pod.events:
        console.print()
        t = table("WHEN", "EVENT", "WHO", "FROM", "HOW LONG", "WHAT")
        for event in pod.events:
            t.add_row(
                age(event.at),
                esc(event.kind),
                esc(event.who or "-"),
                esc(event.origin or "-"),
                duration(event.duration_s) if event.duration_s is not None else "-",
                esc(event.text),
            )
        console.print(t)


def _idle_text(pod: PodView) -> str:
    from corral.cli.output import duration

    if pod.spec.idle_stop is None:
        return "never"
    text = f"after {duration(pod.spec.idle_stop)} idle"
    at = _idle_at(pod)
    return f"{text} ({at})" if at != "-" else text


def _next_steps(pod: PodView, included: bool) -> None:
    name = esc(pod.name)
    console = out()
    if included:
        console.print(f"  ssh:        ssh {name}")
    else:
        console.print(f"  ssh:        corral pod ssh-config, then ssh {name}")
    console.print(f"  or:         corral pod ssh {name}")
    console.print(f"  a command:  corral pod exec {name} -- nvidia-smi")
    if pod.spec.jupyter:
        from corral.spec.pod import JUPYTER_PORT

        console.print(f"  jupyter:    corral pod forward {name} {JUPYTER_PORT}")
        console.print(
            f"              then open {esc(pod.jupyter_url or f'http://127.0.0.1:{JUPYTER_PORT}')}"
        )


# -- commands --------------------------------------------------------------------------------


CREATE_HELP = """\
Create a dev pod and wait until it runs.

[bold]corral pod create dev --gpus H100:1 --volume data:/data[/], or from a file:
[bold]corral pod create -f pod.yaml[/] (flags override its fields). Then [bold]ssh NAME[/]
(after [bold]corral pod ssh-config[/]) or [bold]corral pod ssh NAME[/].
"""


@app.command("create", help=CREATE_HELP)
def create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The pod's name.", show_default=False)] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="A PodSpec YAML file.", show_default=False)
    ] = None,
    gpus: GpusOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    env: EnvOpt = [],  # noqa: B006  (typer reads it, never mutated)
    volume: VolumeOpt = [],  # noqa: B006
    idle_stop: IdleStopOpt = None,
    jupyter: JupyterOpt = None,
    workdir: WorkdirOpt = None,
    no_workdir: NoWorkdirOpt = False,
    setup: SetupOpt = None,
    image: ImageOpt = None,
    python: PythonOpt = None,
    requirements: RequirementsOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until it runs (or fails).")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for it to run.", min=1)
    ] = 600,
    workspace: WorkspaceOpt = None,
) -> None:
    from corral.cli.workdir import send_workdir

    flags = PodFlags(
        gpus,
        cpus,
        memory,
        list(env or []),
        list(volume or []),
        idle_stop,
        jupyter,
        workdir=workdir,
        no_workdir=no_workdir,
        setup=setup,
        image=image,
        python=python,
        requirements=requirements,
    )
    spec = build_pod_spec(name, file, flags)
    check_workspace("pod", spec.workspace, workspace)
    st = state(ctx)
    with st.client(workspace or spec.workspace) as client:
        spec = send_workdir(
            client, spec, flag=workdir, off=no_workdir, home=st.home(), workspace=None
        )
        pod = client.create_pod(spec)
        note(f"created pod [bold]{esc(pod.name)}[/] in workspace {esc(pod.workspace)}")
        _after_start(ctx, client, pod, wait, timeout)


def _after_start(
    ctx: typer.Context, client: Client, pod: PodView, wait: bool, timeout: float
) -> None:
    st = state(ctx)
    if wait:
        pod = wait_running(client, pod, timeout)
    sshfiles.refresh_if_included(st, client)
    render_pod(out(), pod)
    if pod.state == "failed":
        raise CliError(f"pod {pod.name} failed: {pod.reason or 'see corral pod get'}")
    from corral.cli.sshfiles import SshPaths, is_included

    paths = SshPaths(st.home())
    _next_steps(pod, is_included(SshPaths.user_config(), paths.config))
    if wait and pod.state != "running":
        raise CliError(
            f"pod {pod.name} is still {pod.state} after {timeout:g} s"
            + (f": {pod.reason}" if pod.reason else ""),
            hint=f"it stays queued; see `corral pod get {pod.name}`",
        )


def wait_running(client: Client, pod: PodView, timeout: float) -> PodView:
    """Poll until running, failed or stopped, or `timeout` seconds pass."""
    import sys

    deadline = client._clock() + timeout
    status = None
    if sys.stderr.isatty():
        from corral.cli.output import err

        status = err().status(f"pod {esc(pod.name)}: {pod.state}")
        status.start()
    try:
        while pod.state in ("pending", "starting") and client._clock() < deadline:
            client._sleep(1.0)
            pod = client.get_pod(pod.name)
            if status is not None:
                why = f" ({esc(pod.reason)})" if pod.reason else ""
                status.update(f"pod {esc(pod.name)}: {pod.state}{why}")
    finally:
        if status is not None:
            status.stop()
    return pod


@app.command("ls")
def ls(ctx: typer.Context, workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List the workspace's pods."""
    from corral.wire.pods import PodList

    with state(ctx).client(workspace) as client:
        pods = client.list_pods()
        ws = client.workspace
    if json_:
        print_page(PodList(pods=pods))
    elif not pods:
        note(f"no pods in workspace {esc(ws)}; make one: corral pod create dev --gpus 1")
    else:
        render_list(out(), pods)


@app.command("get")
def get(
    ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None, json_: JsonOpt = False
) -> None:
    """Show a pod: state, node, GPUs, why it waits or stopped, its sessions and events."""
    with state(ctx).client(workspace) as client:
        pod = client.get_pod(name)
    print_view(pod, json_, render_pod)


@app.command("stop")
def stop(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Stop a pod and free its GPUs; the files in its working directory stay."""
    with state(ctx).client(workspace) as client:
        pod = client.stop_pod(name)
    out().print(f"pod [bold]{esc(pod.name)}[/]: {_state(pod)}")


@app.command("start")
def start(
    ctx: typer.Context,
    name: NameArg,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until it runs (or fails).")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for it to run.", min=1)
    ] = 600,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run a stopped pod again (maybe on another node); its files come with it."""
    with state(ctx).client(workspace) as client:
        pod = client.start_pod(name)
        _after_start(ctx, client, pod, wait, timeout)


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Delete a pod and its working directory (volumes stay)."""
    with state(ctx).client(workspace) as client:
        client.delete_pod(name)
    out().print(f"deleted pod [bold]{esc(name)}[/]")


app.command("ssh-config", rich_help_panel="Reach a pod")(podssh.ssh_config)
app.command("ssh", cls=InlineCommand, rich_help_panel="Reach a pod")(podssh.pod_ssh)
app.command("exec", cls=InlineCommand, rich_help_panel="Reach a pod")(podssh.pod_exec)
app.command("forward", rich_help_panel="Reach a pod")(podssh.pod_forward)
app.command("proxy", rich_help_panel="Reach a pod")(podssh.pod_proxy)
