"""`corral job`: run a job, watch it, cancel it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer

from corral.cli import jobfollow, rerun
from corral.cli.config import state
from corral.cli.inline import InlineCommand, inline_argv
from corral.cli.light import LightGroup
from corral.cli.output import CliError, err, note, out, print_json

if TYPE_CHECKING:
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
        code = jobfollow.follow_job(client, job.name, job.spec.replicas)
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
    rank = jobfollow.replica_arg(replica)
    with state(ctx).client(workspace) as client:
        last = ["running"]
        try:
            if rank is not None:
                jobfollow.stream(client, name, rank, follow)
            elif follow:
                jobfollow.follow_all(client, name, client.get_job(name).spec.replicas > 1, last)
            else:
                jobfollow.print_all(client, name)
        except KeyboardInterrupt:
            note("\n" + jobfollow.stopped_text(name, last[0]))
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
