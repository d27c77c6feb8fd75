"""`corral job`: run a job, watch it, cancel it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.inline import InlineCommand, inline_argv
from corral.cli.light import LightGroup
from corral.cli.output import CliError, err, note, out, print_json

if TYPE_CHECKING:
    from corral.client import Client
    from corral.wire.api import JobView

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
Without --name the server names the job. Ctrl-C stops following; the job keeps running.
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
        job = client.submit_job(spec)
        if detach:
            _print_submitted(job, to_stderr=False)
            return
        _print_submitted(job, to_stderr=True)
        code = follow_job(client, job.name)
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


def follow_job(client: Client, name: str) -> int:
    """Stream replica 0's log until the job ends; report how it ended; its exit code."""
    from corral.cli.output import esc
    from corral.wire.api import TERMINAL_JOB_STATES

    note("[dim]following the log of replica 0; Ctrl-C stops following (the job keeps running)[/]")
    try:
        _stream(client, name, replica=0, follow=True)
        job = client.get_job(name)
        if job.state not in TERMINAL_JOB_STATES:
            job = client.wait_job(name, poll_s=0.5)
    except KeyboardInterrupt:
        note(
            f"\nstopped following; job {esc(name)} keeps running. "
            f"Follow again: corral job logs -f {esc(name)} · stop it: corral job cancel "
            f"{esc(name)}"
        )
        return 130
    return report_outcome(job)


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


@app.command("ls")
def ls(ctx: typer.Context, workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List the jobs of a workspace."""
    from corral.cli.jobview import jobs_table
    from corral.cli.output import esc
    from corral.wire.api import JobList

    with state(ctx).client(workspace) as client:
        jobs = client.list_jobs()
        ws = client.workspace
    if json_:
        print_json(JobList(jobs=jobs).model_dump(mode="json"))
    elif not jobs:
        note(f"no jobs in workspace {esc(ws)}; submit one: corral job run -- echo hello")
    else:
        out().print(jobs_table(jobs))


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
    replica: Annotated[int, typer.Option("--replica", "-r", help="Replica rank.", min=0)] = 0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a replica's log (its current attempt)."""
    from corral.cli.output import esc

    with state(ctx).client(workspace) as client:
        try:
            _stream(client, name, replica, follow)
        except KeyboardInterrupt:
            note(f"\nstopped following; job {esc(name)} keeps running")
            raise typer.Exit(130) from None


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
