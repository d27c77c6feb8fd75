"""`corral job`: run a job, watch it, cancel it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, cast

import typer

from corral.cli import rerun
from corral.cli.config import state
from corral.cli.inline import InlineCommand, inline_argv
from corral.cli.light import LightGroup
from corral.cli.output import CliError, err, note, out, print_json

if TYPE_CHECKING:
    from corral.client import Client
    from corral.wire.api import JobKind, JobView

app = typer.Typer(
    cls=LightGroup,
    help="Training and batch jobs: run, list, inspect, follow logs, cancel.",
    no_args_is_help=True,
)


WorkspaceOpt = Annotated[
    str | None,
    typer.Option(
        "--workspace", "-w", help="Workspace (default: the configured one).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON document.")]
NameArg = Annotated[str, typer.Argument(help="The job's name.", show_default=False)]


RUN_HELP = """\
Submit a job and follow its log until it ends; exit with the job's exit code.

From a file: [bold]corral job run train.yaml[/] (flags override its fields).
Inline: [bold]corral job run --gpus H100:8 --replicas 2 -- torchrun train.py[/]: the argv after
`--` is the entrypoint; a single quoted argument with spaces is run by /bin/sh -c.
Without --name the server names the job. While it waits to be placed, says why (and each
change of why); once it runs, streams every replica's log (prefixed [RANK] when there are
several). Ctrl-C stops following; the job stays queued or running.
"""


@app.command("run", cls=InlineCommand, help=RUN_HELP)
def run(
    ctx: typer.Context,
    file: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE.yaml",
            show_default=False,
            help="A job file; or none, and the command after `--`.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Job name.", show_default=False)
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="Per replica: H100:8, 8 or H100.", show_default=False)
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(help="CPUs per replica.", show_default=False)
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory per replica: 16Gi, 512Mi.", show_default=False)
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Replicas, placed together as a gang.", show_default=False)
    ] = None,
    max_restarts: Annotated[
        int | None, typer.Option(help="Restarts allowed after a failure.", show_default=False)
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            help="endpoint, dev, train or batch, or a number -1000..1000; higher runs first.",
            show_default=False,
        ),
    ] = None,
    preemptible: Annotated[
        bool | None,
        typer.Option(
            "--preemptible/--not-preemptible",
            help="May be stopped and queued again for higher-priority work, and may borrow "
            "idle GPUs beyond the workspace's quota.",
            show_default=False,
        ),
    ] = None,
    topology: Annotated[
        str | None,
        typer.Option(
            help="Widest domain the gang may span: node, rack, zone, region, provider, any.",
            show_default=False,
        ),
    ] = None,
    max_runtime: Annotated[
        str | None,
        typer.Option(help="Stop it after this long: 90 (s), 30m, 2h.", show_default=False),
    ] = None,
    selector: Annotated[
        list[str] | None,
        typer.Option(
            "--selector", help="LABEL=VALUE the node must carry (repeatable).", show_default=False
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", "-e", help="K=V, or K to pass this shell's value.", show_default=False
        ),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="ENV=NAME: set ENV from the workspace secret NAME (`corral secret set`); "
            "the value never passes through this command (repeatable).",
            show_default=False,
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Submit and return; do not follow the log.")
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    from corral.cli.jobspec import RunFlags, build_job_spec

    flags = RunFlags(
        name=name,
        gpus=gpus,
        cpus=cpus,
        memory=memory,
        replicas=replicas,
        max_restarts=max_restarts,
        priority=priority,
        preemptible=preemptible,
        topology=topology,
        max_runtime=max_runtime,
        selector=selector or [],
        env=env or [],
        secret=secret or [],
    )
    spec = build_job_spec(file or [], inline_argv(ctx), flags)
    if workspace and spec.workspace and workspace != spec.workspace:
        raise CliError(
            f"the job file says workspace {spec.workspace!r} but --workspace says {workspace!r}",
            code=2,
        )
    with state(ctx).client(workspace) as client:
        # A file's own name is taken afresh when that job has ended; --name never is.
        job, renamed = rerun.submit(client, spec, renamable=name is None)
        if renamed:
            note(renamed)
        if detach:
            _print_submitted(job, to_stderr=False)
            return
        _print_submitted(job, to_stderr=True)
        code = follow_job(client, job.name, job.spec.replicas)
    raise typer.Exit(code)


def _print_submitted(job: JobView, to_stderr: bool) -> None:
    from corral.cli.output import esc, warn

    console = err() if to_stderr else out()
    console.print(
        f"submitted job [bold]{esc(job.name)}[/] ({esc(job.state)}) "
        f"in workspace {esc(job.workspace)}"
    )
    for warning in job.warnings:  # on stderr, whatever else goes to stdout
        warn(warning)
    if not to_stderr:
        console.print(f"  follow its log:  corral job logs -f {esc(job.name)}")
        console.print(f"  see its state:   corral job get {esc(job.name)}")


def follow_job(client: Client, name: str, replicas: int | None = None) -> int:
    """Say why the job waits while it waits, stream every replica's log once it runs, until
    it ends; report how it ended; its exit code."""
    from corral.wire.api import TERMINAL_JOB_STATES

    if replicas is None:
        replicas = client.get_job(name).spec.replicas
    which = "every replica" if replicas > 1 else "its log"
    note(f"[dim]following {which}; Ctrl-C stops following[/]")
    last: list[str] = ["pending"]
    try:
        _follow_all(client, name, replicas > 1, last)
        job = client.get_job(name)
        if job.state not in TERMINAL_JOB_STATES:
            job = client.wait_job(name, poll_s=0.5)
    except KeyboardInterrupt:
        note("\n" + stopped_text(name, last[0]))
        return 130
    return report_outcome(job)


def stopped_text(name: str, state: str) -> str:
    """What Ctrl-C leaves behind, said for the state the job was last seen in."""
    from corral.cli.output import esc

    n = esc(name)
    if state == "pending":
        return (
            f"stopped following; job {n} is still pending: it will run when placed. "
            f"Drop it: corral job cancel {n} · follow again: corral job logs -f {n} --replica all"
        )
    if state in ("succeeded", "failed", "cancelled"):
        return f"stopped following; job {n} has ended ({state}): corral job get {n}"
    return (
        f"stopped following; job {n} keeps running. Follow again: corral job logs -f {n} "
        f"--replica all · stop it: corral job cancel {n}"
    )


def _follow_all(client: Client, name: str, prefixed: bool, last: list[str]) -> None:
    """Print follow.follow_job's events; `last[0]` keeps the state last seen (for Ctrl-C)."""
    from corral.cli.logprint import LogPrinter
    from corral.cli.output import esc
    from corral.client.follow import Ended, LogText, NewAttempt, Running, Waiting, follow_job

    printer = LogPrinter(prefixed)
    try:
        for event in follow_job(client, name):
            if isinstance(event, Waiting):
                last[0] = event.state
                why = f": {esc(event.reason)}" if event.reason else ""
                note(f"[yellow]{esc(event.state)}[/]{why}")
            elif isinstance(event, Running):
                last[0] = "running"
            elif isinstance(event, LogText):
                printer.write(event.rank, event.data)
            elif isinstance(event, NewAttempt):
                printer.close()
                note(f"[dim]── attempt {event.attempt} of job {esc(name)} ──[/]")
            elif isinstance(event, Ended):
                last[0] = event.state
    finally:
        printer.close()


def report_outcome(job: JobView) -> int:
    from corral.cli.output import duration, esc

    ran = ""
    if job.started_at is not None and job.finished_at is not None:
        ran = f" in {duration(job.finished_at - job.started_at)}"
    tries = f" after {job.attempt} attempts" if job.attempt > 1 else ""
    if job.state == "succeeded":
        note(f"job [bold]{esc(job.name)}[/] [green]succeeded[/]{ran}{tries}")
        return 0
    if job.state == "cancelled":
        note(f"job [bold]{esc(job.name)}[/] was [dim]cancelled[/]")
        return 1
    why = f"exit code {job.exit_code}" if job.exit_code is not None else "no exit code"
    if job.reason:
        why += f" — {esc(job.reason)}"
    note(f"job [bold]{esc(job.name)}[/] [red]failed[/]{ran}{tries}: {why}")
    note(f"[dim]details: corral job get {esc(job.name)}[/]")
    code = job.exit_code
    return code if code is not None and 0 < code < 256 else 1


def _stream(client: Client, name: str, replica: int, follow: bool) -> None:
    from corral.cli.output import esc

    at_line_start = True

    def write(data: str) -> None:
        nonlocal at_line_start
        sys.stdout.write(data)
        sys.stdout.flush()
        at_line_start = data.endswith("\n")

    if follow:
        attempt: int | None = None
        for page in client.follow_log_pages(name, replica):
            if attempt is not None and page.attempt != attempt:
                if not at_line_start:
                    write("\n")
                note(f"[dim]── attempt {page.attempt} of job {esc(name)} ──[/]")
            attempt = page.attempt
            write(page.data)
    else:
        offset = 0
        while True:
            page = client.job_logs(name, replica, offset)
            if page.data:
                write(page.data)
            if page.complete or not page.data or page.next_offset <= offset:
                break
            offset = page.next_offset
    if not at_line_start:
        write("\n")


LS_HELP = """\
List a workspace's jobs, newest first.

Filter with [bold]--state[/] (repeatable: --state pending --state running) and [bold]--kind[/];
the first --limit jobs are shown (default 50), [bold]--all[/] shows every one.
[bold]--watch[/] redraws the list as it changes, until Ctrl-C.
"""


@app.command("ls", help=LS_HELP)
def ls(
    ctx: typer.Context,
    state_: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            metavar="STATE",
            help="pending, starting, running, cancelling, succeeded, failed or cancelled "
            "(repeatable).",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            metavar="KIND",
            help="job (submitted jobs), endpoint-replica (jobs that serve an endpoint) or all.",
        ),
    ] = "all",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="Show at most this many.")
    ] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Show every job, page after page.")] = False,
    all_workspaces: Annotated[
        bool,
        typer.Option("--all-workspaces", "-A", help="Every workspace's jobs (cluster admins)."),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Redraw as the list changes, until Ctrl-C.")
    ] = False,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    from corral.cli.joblist import JobQuery, check_states, list_once, watch_jobs

    query = JobQuery(
        states=check_states(state_ or []),
        kind=_kind(kind),
        limit=None if all_ else limit,
        all_workspaces=all_workspaces,
    )
    with state(ctx).client(workspace) as client:
        if watch:
            watch_jobs(client, query)
        else:
            list_once(client, query, json_)


def _kind(value: str) -> JobKind:
    if value not in ("job", "endpoint-replica", "all"):
        raise CliError(f"--kind: expected job, endpoint-replica or all, got {value!r}", code=2)
    return cast("JobKind", value)


@app.command("get")
def get(
    ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None, json_: JsonOpt = False
) -> None:
    """Show a job: state, attempts, replicas and where they run, the log tail if it failed."""
    from corral.cli.jobview import print_job

    with state(ctx).client(workspace) as client:
        job = client.get_job(name)
    if json_:
        print_json(job.model_dump(mode="json"))
    else:
        print_job(out(), job)


@app.command("logs")
def logs(
    ctx: typer.Context,
    name: NameArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    replica: Annotated[
        str,
        typer.Option(
            "--replica",
            "-r",
            metavar="RANK|all",
            help="Replica rank, or all: every replica's, each line prefixed [RANK].",
        ),
    ] = "0",
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a replica's log (its current attempt), or every replica's."""
    rank = _replica_arg(replica)
    with state(ctx).client(workspace) as client:
        last = ["running"]
        try:
            if rank is not None:
                _stream(client, name, rank, follow)
            elif follow:
                _follow_all(client, name, client.get_job(name).spec.replicas > 1, last)
            else:
                _print_all(client, name)
        except KeyboardInterrupt:
            note("\n" + stopped_text(name, last[0]))
            raise typer.Exit(130) from None


def _replica_arg(value: str) -> int | None:
    """--replica: a rank (0, 1, ...) or `all` (None)."""
    if value.strip().lower() == "all":
        return None
    try:
        rank = int(value)
    except ValueError:
        rank = -1
    if rank < 0:
        raise CliError(f"--replica: expected a rank (0, 1, ...) or all, got {value!r}", code=2)
    return rank


def _print_all(client: Client, name: str) -> None:
    """Every replica's log as it is now (no following), prefixed when there are several."""
    from corral.cli.logprint import LogPrinter

    answer = client.all_logs(name)
    printer = LogPrinter(answer.replicas > 1)
    offsets = [p.next_offset for p in answer.pages]
    try:
        while True:
            for page in answer.pages:
                printer.write(page.replica, page.data)
            if not any(p.data for p in answer.pages):
                break
            answer = client.all_logs(name, offsets, answer.attempt)
            offsets = [p.next_offset for p in answer.pages]
    finally:
        printer.close()


@app.command("cancel")
def cancel(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Stop a job's replicas; it ends `cancelled`."""
    from corral.cli.jobview import state_text
    from corral.cli.output import esc

    with state(ctx).client(workspace) as client:
        job = client.cancel_job(name)
    out().print(f"job [bold]{esc(job.name)}[/]: {state_text(job)}")


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Forget a finished job and its logs."""
    from corral.cli.output import esc
    from corral.client.errors import Conflict

    with state(ctx).client(workspace) as client:
        try:
            client.delete_job(name)
        except Conflict as exc:
            hint = (
                None
                if "job cancel" in exc.message
                else f"cancel it first: corral job cancel {name}"
            )
            raise CliError(exc.message, hint=hint) from None
    out().print(f"deleted job [bold]{esc(name)}[/]")
