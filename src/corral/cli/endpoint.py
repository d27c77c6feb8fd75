"""`corral endpoint`: an HTTP model server behind the gateway: deploy, watch, roll, remove."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.endpointopts import TimeoutOpt, UpdateWaitOpt, WaitOpt
from corral.cli.endpointspec import EndpointFlags
from corral.cli.inline import InlineCommand, inline_argv
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt, WorkspaceOpt, takes_flags
from corral.cli.output import CliError, err, esc, note, out, print_page, print_view, warn
from corral.cli.specflags import check_workspace

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.client import Client
    from corral.spec.endpoint import EndpointSpec
    from corral.wire.api import EndpointView

app = typer.Typer(
    cls=LightGroup,
    help="Inference endpoints: deploy, list, inspect, follow logs, update, delete.",
    no_args_is_help=True,
)


NameArg = Annotated[str, typer.Argument(help="The endpoint's name.", show_default=False)]

DEPLOY_HELP = """\
Deploy an endpoint: replicas of an HTTP server, each listening on $PORT, behind the gateway
at /ep/NAME/.

From a file: [bold]corral endpoint deploy endpoint.yaml[/] (flags override its fields).
Inline: [bold]corral endpoint deploy NAME --gpus 1 -- vllm serve MODEL --port '$PORT'[/]: the
words after `--` run in a shell on the node, where $PORT is the port corral chose (quote it
here, or this shell expands it first). A Python class: [bold]--app app.py:Embedder[/].
"""


@app.command("deploy", cls=InlineCommand, help=DEPLOY_HELP)
@takes_flags(EndpointFlags)
def deploy(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE.yaml|NAME",
            show_default=False,
            help="An endpoint file, or the new endpoint's name (default: generated).",
        ),
    ] = None,
    flags: EndpointFlags = EndpointFlags(),
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    workspace: WorkspaceOpt = None,
) -> None:
    from corral.cli.endpointspec import build_deploy_spec, mentions_port

    inline = inline_argv(ctx)
    wait_s = _timeout_s(timeout) if wait else None
    spec = build_deploy_spec(target or [], inline, flags)
    check_workspace("endpoint", spec.workspace, workspace)
    if inline and not mentions_port(inline):
        _warn_port()
    with state(ctx).client(workspace) as client:
        view = client.deploy_endpoint(spec)
        _print_deployed(view, "deployed")
        if wait_s is not None:
            _wait(client, view.name, wait_s)


@app.command("update", cls=InlineCommand)
@takes_flags(EndpointFlags)
def update(
    ctx: typer.Context,
    name: NameArg,
    file: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[FILE.yaml]",
            show_default=False,
            help="A new spec for it; or none, and flags or a command after `--`.",
        ),
    ] = None,
    flags: EndpointFlags = EndpointFlags(),
    wait: UpdateWaitOpt = True,
    timeout: TimeoutOpt = "10m",
    workspace: WorkspaceOpt = None,
) -> None:
    """Roll out a new spec: a file replaces it; flags (or a command after `--`) change the
    current one where they say. New replicas take traffic once ready; the old ones then drain.
    Where no node has room for new replicas beside the old ones, old ones are replaced one
    at a time. Waits until the new revision serves, unless --detach.
    """
    from corral.cli.endpointspec import build_update_spec, mentions_port

    inline = inline_argv(ctx)
    wait_s = _timeout_s(timeout) if wait else None
    with state(ctx).client(workspace) as client:
        spec = build_update_spec(name, file or [], inline, flags, _current(client, name))
        check_workspace("endpoint", spec.workspace, workspace)
        if inline and not mentions_port(inline):
            _warn_port()
        view = client.update_endpoint(name, spec)
        _print_deployed(view, "updated")
        if wait_s is not None:
            _wait(client, view.name, wait_s, revision=view.revision)


def _current(client: Client, name: str) -> Callable[[], EndpointSpec]:
    def current() -> EndpointSpec:
        return client.get_endpoint(name).spec

    return current


def _timeout_s(text: str) -> float:
    from corral.spec.units import parse_duration_s

    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise CliError(f"--timeout: {exc}", code=2) from None


def _warn_port() -> None:
    warn(
        "the command does not mention $PORT: the server must listen on the port corral "
        "puts in $PORT (write '$PORT' in quotes so this shell leaves it alone)"
    )


def _print_deployed(view: EndpointView, verb: str) -> None:
    from corral.cli.endpointview import address

    console = out()
    console.print(
        f"{verb} endpoint [bold]{esc(view.name)}[/] (revision {view.revision}, {esc(view.state)}) "
        f"in workspace {esc(view.workspace)}"
    )
    if view.url:
        console.print(f"  url:      {esc(view.url)}")
    else:
        console.print(
            f"  path:     {esc(address(view))} on the gateway [dim](this server does not know "
            "the gateway's address; start it with CORRAL_GATEWAY_PUBLIC_URL)[/]"
        )
    app_file = (view.spec.app or "").rpartition(":")[0]
    if view.spec.working_dir is None and (app_file.endswith(".py") or "/" in app_file):
        console.print(f"  app:      {esc(view.spec.app)} [dim](every node must see this file)[/]")
    console.print(f"  watch it: corral endpoint get {esc(view.name)}")
    for warning in view.warnings:  # on stderr, whatever else goes to stdout
        warn(warning)
    console.print(f"  its log:  corral endpoint logs -f {esc(view.name)}")


def _wait(client: Client, name: str, timeout_s: float, revision: int | None = None) -> None:
    from corral.cli.endpointview import address

    def show(view: EndpointView) -> None:
        reason = f" — {view.reason}" if view.reason and view.reason != view.state else ""
        status.update(
            f"endpoint {esc(name)}: {esc(view.state)}, {view.ready_replicas} of "
            f"{view.desired_replicas} ready{esc(reason)}"
        )

    try:
        what = f"revision {revision} of endpoint" if revision else "endpoint"
        with err().status(f"waiting for {what} {esc(name)} to be ready…") as status:
            view = client.wait_endpoint(name, timeout=timeout_s, on_poll=show, revision=revision)
    except TimeoutError as exc:
        raise CliError(
            str(exc), hint=f"see why: corral endpoint logs {name} · corral endpoint get {name}"
        ) from None
    except KeyboardInterrupt:
        note(
            f"\nstopped waiting; endpoint {esc(name)} keeps deploying "
            f"(corral endpoint get {esc(name)})"
        )
        raise typer.Exit(130) from None
    if view.state == "scaled-to-zero":
        note(
            f"endpoint [bold]{esc(name)}[/] is scaled to zero: the first request starts a "
            f"replica ({esc(address(view))})"
        )
    else:
        draining = sum(1 for r in view.replicas if r.state == "draining")
        old = f"; {draining} old replica{'s' if draining != 1 else ''} draining" if draining else ""
        note(
            f"endpoint [bold]{esc(name)}[/] is [green]ready[/]: {view.ready_replicas} of "
            f"{view.desired_replicas} replicas at {esc(address(view))}{old}"
        )


@app.command("ls")
def ls(ctx: typer.Context, workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List the endpoints of a workspace."""
    from corral.cli.endpointview import endpoints_table
    from corral.wire.api import EndpointList

    with state(ctx).client(workspace) as client:
        views = client.list_endpoints()
        ws = client.workspace
    if json_:
        print_page(EndpointList(endpoints=views))
    elif not views:
        # http.server answers GET / (not /health, the default readiness path): this one
        # becomes ready as it is.
        note(
            f"no endpoints in workspace {esc(ws)}; deploy one: corral endpoint deploy hello "
            "--readiness-path / --wait -- python3 -m http.server '$PORT'"
        )
    else:
        out().print(endpoints_table(views))


@app.command("get")
def get(
    ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None, json_: JsonOpt = False
) -> None:
    """Show an endpoint: state, URL, scaling, and its replicas with where they run."""
    from corral.cli.endpointview import print_endpoint

    with state(ctx).client(workspace) as client:
        view = client.get_endpoint(name)
    print_view(view, json_, print_endpoint)


@app.command("logs")
def logs(
    ctx: typer.Context,
    name: NameArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until that replica ends.")
    ] = False,
    replica: Annotated[
        int | None,
        typer.Option(
            "--replica",
            "-r",
            min=0,
            help="Which live replica, counting from 0 in `corral endpoint get` order; "
            "default: the first ready one.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print the log of one of an endpoint's replicas (each replica is a job)."""
    from corral.cli.endpointlogs import pick_replica_job
    from corral.cli.jobfollow import stream

    with state(ctx).client(workspace) as client:
        job, why = pick_replica_job(client, name, replica)
        note(f"[dim]{esc(why)}[/]")
        try:
            stream(client, job, 0, follow)
        except KeyboardInterrupt:
            note(f"\nstopped following; endpoint {esc(name)} keeps serving")
            raise typer.Exit(130) from None


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Remove an endpoint: its replicas finish their open requests, then stop."""
    with state(ctx).client(workspace) as client:
        view = client.delete_endpoint(name)
    n = len(view.replicas)
    if n:
        what = (
            "its replica finishes its open requests and stops"
            if n == 1
            else f"its {n} replicas finish their open requests and stop"
        )
        out().print(f"deleting endpoint [bold]{esc(view.name)}[/]: {what}, then it is gone")
    else:
        out().print(f"deleting endpoint [bold]{esc(view.name)}[/]: it has no replicas; gone soon")
