"""`corral job`: run a job, watch it, cancel it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer

from corral.cli import jobfollow, rerun
from corral.cli.config import state
from corral.cli.inline import InlineCommand, inline_argv
from corral.cli.jobspec import RunFlags
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt, WorkspaceOpt, takes_flags
from corral.cli.output import CliError, err, note, out, print_view
from corral.cli.specflags import check_workspace

if TYPE_CHECKING:
    from corral.wire.api import JobKind, JobView

app = typer.Typer(
    cls=LightGroup,
    help="Training and batch jobs: run, list, inspect, follow logs, cancel.",
    no_args_is_help=True,
)


NameArg = Annotated[str, typer.Argument(help="The job's name.", show_default=False)]


RUN_HELP = """\
Submit a job and follow its log until it ends; exit with the job's exit code.

From a file: [bold]corral job run train.yaml[/] (flags override its fields).
Inline: [bold]corral job run --gpus H100:8 --replicas 2 -- torchrun train.py[/]: the argv after
`--` is the entrypoint; a single quoted argument with spaces is run by /bin/sh -c.
Run inside a project (a directory with .git, pyproject.toml, requirements.txt, setup.py or
.corralignore), the directory travels with the job: packed honouring .gitignore and
.corralignore, only what the server lacks uploaded, and every replica starts in a copy
(--workdir DIR for another, --no-workdir for none).
Without --name the server names the job. While it waits to be placed, says why (and each
change of why); once it runs, streams every replica's log (prefixed [RANK] when there are
several). Ctrl-C stops following; the job stays queued or running.
"""


@app.command("run", cls=InlineCommand, help=RUN_HELP)
@takes_flags(RunFlags)
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
    flags: RunFlags = RunFlags(),
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Submit and return; do not follow the log.")
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    from corral.cli.jobspec import build_job_spec
    from corral.cli.workdir import send_workdir

    spec = build_job_spec(file or [], inline_argv(ctx), flags)
    check_workspace("job", spec.workspace, workspace)
    st = state(ctx)
    with st.client(workspace) as client:
        spec = send_workdir(
            client,
            spec,
            flag=flags.workdir,
            off=flags.no_workdir,
            home=st.home(),
            workspace=spec.workspace,
        )
        # A file's own name is taken afresh when that job has ended; --name never is.
        job, renamed = rerun.submit(client, spec, renamable=flags.name is None)
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
    print_view(job, json_, print_job)


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


ReplicaOpt = Annotated[int, typer.Option("--replica", "-r", min=0, help="The replica's rank.")]


@app.command("ssh", cls=InlineCommand, rich_help_panel="Debug a replica")
def ssh(
    ctx: typer.Context, name: NameArg, replica: ReplicaOpt = 0, workspace: WorkspaceOpt = None
) -> None:
    """Open a shell in a running replica with OpenSSH (py-spy, nvidia-smi, a look at files).

    Arguments after `--` go to ssh.
    """
    from corral.cli.podssh import job_ssh

    job_ssh(state(ctx), name, replica, workspace, inline_argv(ctx) or [])


@app.command("exec", cls=InlineCommand, rich_help_panel="Debug a replica")
def exec_(
    ctx: typer.Context, name: NameArg, replica: ReplicaOpt = 0, workspace: WorkspaceOpt = None
) -> None:
    """Run a command in a running replica; exit with its exit code (no OpenSSH needed).

    corral job exec train -r 1 -- nvidia-smi
    """
    from corral.cli.podssh import Target, run_exec

    run_exec(state(ctx), Target("job", name, replica), inline_argv(ctx) or [], workspace)


@app.command("proxy", rich_help_panel="Debug a replica")
def proxy(
    ctx: typer.Context, name: NameArg, replica: ReplicaOpt = 0, workspace: WorkspaceOpt = None
) -> None:
    """The ProxyCommand of `corral job ssh`: stdin/stdout to the replica through the server."""
    from corral.cli.podssh import run_proxy

    run_proxy(state(ctx), "job", name, replica, workspace)
