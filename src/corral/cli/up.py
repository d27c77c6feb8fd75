"""`corral up` and `corral down`: the whole control plane on this machine, in one command."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.output import CliError, err, esc, note, out, warn

if TYPE_CHECKING:
    from corral.cli.localfiles import Tokens
    from corral.cli.localrun import LocalPlane
    from corral.spec import JobSpec
    from corral.wire.api import NodeView

DEFAULT_PORT = 7390
DEFAULT_GATEWAY_PORT = 8080


def up(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="API port; the next free one if it is taken.", min=1, max=65535)
    ] = DEFAULT_PORT,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start in the background and return.")
    ] = False,
    fake_gpus: Annotated[
        str | None,
        typer.Option(
            help="Give the local node fake GPUs, e.g. H100:8. Default: none, the "
            "machine's real GPUs (NVML), if any.",
            show_default=False,
        ),
    ] = None,
    run_file: Annotated[
        Path | None,
        typer.Option(
            "--run", help="Then submit this job file and follow it to its end.", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the server to become healthy (the node gets at least 30).",
            min=1,
        ),
    ] = 20.0,
    gateway_port: Annotated[
        int,
        typer.Option(
            help="Gateway port (endpoints at /ep/NAME/); the next free one if it is taken.",
            min=1,
            max=65535,
        ),
    ] = DEFAULT_GATEWAY_PORT,
    no_gateway: Annotated[
        bool, typer.Option("--no-gateway", help="Do not start a gateway for endpoints.")
    ] = False,
) -> None:
    """Start a one-machine corral: API server, scheduler, gateway and a local agent.

    In the foreground it runs until Ctrl-C, then stops everything cleanly. With --detach it
    returns once the node is ready; `corral down` stops it. State lives in $CORRAL_HOME.
    """
    from corral.cli.localfiles import read_up, remove_up
    from corral.cli.localrun import LocalPlane, Timeouts, running_pids

    st = state(ctx)
    home = st.home().expanduser().resolve()
    spec = _load_run_spec(run_file) if run_file is not None else None
    fake = None if fake_gpus is None or fake_gpus.lower() == "none" else fake_gpus

    previous = read_up(home)
    if previous is not None:
        alive = running_pids(previous)
        if alive:
            pids = ", ".join(f"{role} {pid}" for role, pid in alive.items())
            raise CliError(
                f"corral is already running at {previous.server} ({pids})",
                hint="`corral down` stops it",
            )
        remove_up(home)  # left by a plane that died without `corral down`

    timeouts = Timeouts(server_healthy_s=timeout, node_ready_s=max(30.0, timeout))
    plane = LocalPlane(
        home=home,
        host=host,
        port=port,
        self_argv=st.deps.self_argv,
        timeouts=timeouts,
        # One machine, one user: pools may start agents here (`corral pool create
        # --provider local`); a shared server is not started so.
        environ={**os.environ, "CORRAL_ALLOW_LOCAL_POOLS": "1"},
        gateway_port=None if no_gateway else gateway_port,
    )
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # SIGTERM must unwind like Ctrl-C, or the children outlive us half-started.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = _up(plane, spec, fake, detach)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    raise typer.Exit(code)


def _up(plane: LocalPlane, spec: JobSpec | None, fake: str | None, detach: bool) -> int:
    from corral.cli.localfiles import choose_tokens, remove_up
    from corral.cli.localrun import StartupError, pick_port

    try:
        chosen = pick_port(plane.host, plane.port)
        if chosen != plane.port:
            note(f"port {plane.port} is in use; using {chosen}")
        plane.port = chosen
        if plane.gateway_port is not None:
            # Chosen before the server starts: it is told the gateway's URL at start.
            wanted = plane.gateway_port
            plane.gateway_port = pick_port(
                plane.host, wanted, avoid=frozenset({chosen}), flag="--gateway-port"
            )
            if plane.gateway_port != wanted:
                note(f"gateway port {wanted} is in use; using {plane.gateway_port}")
        tokens = choose_tokens(plane.home)
        node = _start(plane, tokens, fake)
        _save(plane, tokens, detached=detach)
    except StartupError as exc:
        _stop(plane, quiet=True)
        remove_up(plane.home)
        raise CliError(exc.message + "".join("\n  " + line for line in exc.tail)) from None
    except KeyboardInterrupt:
        note("\ninterrupted; stopping what was started")
        _stop(plane, quiet=True)
        remove_up(plane.home)
        return 130

    try:
        return _after_start(plane, node, tokens, spec, detach)
    except KeyboardInterrupt:
        # Ctrl-C before the supervisor took over its signals: still a clean stop.
        if detach:
            raise
        _stop(plane, quiet=False)
        remove_up(plane.home)
        return 0
    except BaseException:
        # A foreground plane never outlives its `corral up`, whatever went wrong.
        if not detach:
            _stop(plane, quiet=False)
            remove_up(plane.home)
        raise


def _after_start(
    plane: LocalPlane, node: NodeView, tokens: Tokens, spec: JobSpec | None, detach: bool
) -> int:
    from corral.cli.localfiles import remove_up

    _print_ready(plane, node, plane.home, detach)
    if spec is not None:
        try:
            job_code = _run_job(plane.url, tokens.admin, spec, plane.home)
        except KeyboardInterrupt:
            if detach:
                return 130
            # In the foreground, Ctrl-C means what it always means for `corral up`.
            _stop(plane, quiet=False)
            remove_up(plane.home)
            return 0
        if detach:
            return job_code
        note("corral keeps running; Ctrl-C stops it")
    if detach:
        return 0
    return _supervise(plane, plane.home)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _load_run_spec(path: Path) -> JobSpec:
    from corral.cli.workdir import relative_to_file
    from corral.spec import load_job_spec

    # Checked before anything starts: a typo should not cost a server start.
    spec = load_job_spec(path)
    # Only a file that names its working directory sends one (`make up` runs from the
    # repository, which is a project: it is not sent for the hello job).
    workdir = relative_to_file(str(path), spec.workdir)
    return spec.model_copy(update={"workdir": workdir}) if workdir else spec


def _start(plane: LocalPlane, tokens: Tokens, fake: str | None) -> NodeView:
    console = err()
    plane.start_server(tokens)
    with console.status(f"starting the server at {plane.url}…"):
        plane.wait_healthy()
    if plane.gateway_port is not None:
        plane.start_gateway(tokens)  # comes up while the agent does
    plane.start_agent(tokens, fake)
    with console.status("starting the local agent…"):
        node = plane.wait_node_ready(tokens.admin)
    with console.status("starting the gateway…"):
        plane.wait_gateway_healthy()
    return node


def _save(plane: LocalPlane, tokens: Tokens, detached: bool) -> None:
    from corral.cli.localfiles import keep_remote_config
    from corral.client.config import write_config

    plane.record(detached)
    kept = keep_remote_config(plane.home)
    if kept is not None:
        note(f"config.json pointed at another server; kept it as {esc(kept)}")
    write_config(plane.home, plane.url, tokens.admin, "default")


def _print_ready(plane: LocalPlane, node: NodeView, home: Path, detach: bool) -> None:
    from corral.cli.console import console_url
    from corral.cli.node import gpu_summary

    console = out()
    gpus = gpu_summary(node)
    mode = "in the background" if detach else "in the foreground"
    console.print(f"[bold green]corral is up[/] ({mode})")
    console.print(f"  API     {plane.url}")
    console.print(
        f"  console {console_url(plane.url)} (log in with the admin token: "
        "corral console --show-token)",
        highlight=False,
    )
    if plane.gateway_url is not None:
        console.print(f"  gateway {plane.gateway_url} (endpoints at /ep/NAME/)")
    console.print(
        f"  node    {esc(node.name)}: {esc(node.condition)}"
        + (f", {esc(gpus)}" if gpus != "-" else ", no GPUs")
    )
    console.print(f"  home    {esc(home)} (config.json has the admin token; logs in logs/)")
    if os.geteuid() == 0:
        console.print(
            "  replicas confined where the kernel allows: each workspace's as its own user "
            "(agent.log says)"
        )
    else:
        warn(
            "replicas are NOT isolated from each other or from you: they run as your user "
            "(run corral as root for per-workspace users and namespaces)"
        )
    console.print()
    console.print("try:")
    console.print("  corral node ls")
    console.print("  corral job run -- python -c \"print('hello from corral')\"")
    console.print("  corral job ls")
    if plane.gateway_url is not None:
        console.print("  corral endpoint deploy web --auth public --readiness-path / -- \\")
        console.print("      python -m http.server '$PORT'")
    console.print()
    if detach:
        console.print("stop it with: corral down")
    else:
        console.print("Ctrl-C (or `corral down`) stops everything.")
    for var in ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE"):
        value = os.environ.get(var)
        if value and not (var == "CORRAL_SERVER" and value.rstrip("/") == plane.url):
            warn(
                f"{var} is set in this shell and overrides config.json; unset it to use this corral"
            )


def _run_job(url: str, admin_token: str, spec: JobSpec, home: Path) -> int:
    from corral.cli.jobfollow import follow_job
    from corral.client import Client

    with Client(url, admin_token, "default") as client:
        if spec.workdir:
            from corral.cli.workdir import send_workdir

            spec = send_workdir(client, spec, flag=None, off=False, home=home)
        job = client.submit_job(spec)
        note(f"submitted job [bold]{esc(job.name)}[/] ({esc(job.state)})")
        return follow_job(client, job.name)


def _supervise(plane: LocalPlane, home: Path) -> int:
    """Wait for Ctrl-C, SIGTERM or `corral down`; stop everything; the exit code."""
    from corral.cli.localfiles import read_up, remove_up

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while not stop.wait(0.5):
        dead = plane.exited()
        if dead is None:
            continue
        recorded = read_up(home)
        if recorded is None or recorded.stopping:
            note("stopped by `corral down`")
            return 0  # `corral down` stops the rest and removes up.json
        tail = "".join("\n  " + line for line in dead.tail())
        err().print(
            f"[bold red]error:[/] the {dead.role} exited with code "
            f"{dead.exit_code()}; see {esc(dead.log)}{esc(tail)}"
        )
        code = 1
        break
    _stop(plane, quiet=False)
    remove_up(home)
    return code


def _stop(plane: LocalPlane, quiet: bool) -> None:
    from corral.cli.localrun import stop_pool_nodes

    # A second Ctrl-C must not cut the shutdown short and leave orphans; it has deadlines.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if not quiet:
            note("stopping the gateway, the agent, then the server…")
        pool_nodes = stop_pool_nodes(plane.home)
        if pool_nodes and not quiet:
            note(f"  {pool_nodes} local pool node(s) stopped")
        for role, how in plane.stop():
            if not quiet and how != "gone":
                note(f"  {role} {how}")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not quiet:
        note("corral is down")


def down(ctx: typer.Context) -> None:
    """Stop the corral that `corral up` started here (gateway, agent, then server)."""
    from corral.cli.localfiles import read_up
    from corral.cli.localrun import stop_pool_nodes, stop_recorded

    home = state(ctx).home().expanduser().resolve()
    recorded = read_up(home)
    if recorded is None:
        out().print(f"nothing is running (no {esc(home / 'up.json')})")
        return
    with err().status("stopping the gateway, the agent, then the server…"):
        pool_nodes = stop_pool_nodes(home)
        results = stop_recorded(home, recorded)
    if pool_nodes:
        out().print(f"local pool nodes: {pool_nodes} stopped")
    for role, pid, how in results:
        out().print(f"{role} (pid {pid}): {'was not running' if how == 'gone' else how}")
    out().print("corral is down")
