"""`corral`: the app is assembled here from one small module per noun.

Startup time is a feature: `corral --help` imports typer and these modules only. Each
command imports what it needs (httpx, pydantic, yaml, the server, the agent) when it runs;
tests/unit/test_cli_startup.py holds that line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli import (
    agent,
    console,
    endpoint,
    gateway,
    job,
    node,
    pod,
    pool,
    quota,
    secret,
    serve,
    server,
    sim,
    sshkey,
    status,
    token,
    up,
    volume,
    whoami,
    workspace,
)
from corral.cli.config import CliDeps, CliState
from corral.cli.errors import report
from corral.cli.helptext import quiet_types
from corral.cli.light import LightGroup

HELP = """\
corral runs dev pods, training jobs and inference endpoints on all of your GPU machines.

Start a one-machine control plane with [bold]corral up[/], then [bold]corral job run -- \
python train.py[/].
"""

EPILOG = (
    "Server and identity come from --server/--workspace, else CORRAL_SERVER, CORRAL_TOKEN and "
    "CORRAL_WORKSPACE, else $CORRAL_HOME/config.json (written by `corral up`)."
)


class CorralGroup(LightGroup):
    """Reports a user's mistakes and the server's refusals as `error: …` lines, not tracebacks."""

    def invoke(self, ctx: Any) -> Any:
        from typer.core import _click  # type: ignore[attr-defined]  # typer vendors click

        try:
            return super().invoke(ctx)
        except _click.exceptions.NoArgsIsHelpError:
            raise  # typer shows the help screen
        except _click.exceptions.UsageError as exc:
            # A mistyped flag is one readable line; typer would draw a box around it.
            from corral.cli.output import error_line

            where = exc.ctx.command_path if exc.ctx is not None else "corral"
            error_line(exc.format_message(), hint=f"see `{where} --help`")
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            code = report(exc)
            if code is None:
                raise  # not a mistake of the user's: a bug, shown with its traceback
            raise typer.Exit(code) from None


def _version(value: bool) -> None:
    if value:
        from corral import __version__

        typer.echo(f"corral {__version__}")
        raise typer.Exit()


def build_app(deps: CliDeps | None = None) -> typer.Typer:
    deps = deps or CliDeps()
    quiet_types()
    app = typer.Typer(
        cls=CorralGroup,
        name="corral",
        help=HELP,
        epilog=EPILOG,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_show_locals=False,  # locals can hold tokens
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        server_url: Annotated[
            str | None,
            typer.Option(
                "--server", help="API address, e.g. http://127.0.0.1:7390.", show_default=False
            ),
        ] = None,
        workspace_name: Annotated[
            str | None,
            typer.Option("--workspace", "-w", help="Workspace to act in.", show_default=False),
        ] = None,
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version, is_eager=True, help="Show the version and exit."
            ),
        ] = False,
    ) -> None:
        ctx.obj = CliState(deps, server=server_url, workspace=workspace_name)

    app.add_typer(pod.app, name="pod", rich_help_panel="Workloads")
    app.add_typer(job.app, name="job", rich_help_panel="Workloads")
    app.add_typer(endpoint.app, name="endpoint", rich_help_panel="Workloads")
    app.command("serve", rich_help_panel="Workloads")(serve.serve)
    app.add_typer(node.app, name="node", rich_help_panel="Cluster")
    app.add_typer(pool.app, name="pool", rich_help_panel="Cluster")
    app.add_typer(workspace.app, name="workspace", rich_help_panel="Cluster")
    app.add_typer(token.app, name="token", rich_help_panel="Cluster")
    app.add_typer(quota.app, name="quota", rich_help_panel="Cluster")
    app.add_typer(secret.app, name="secret", rich_help_panel="Cluster")
    app.add_typer(volume.app, name="volume", rich_help_panel="Workloads")
    app.add_typer(sshkey.app, name="ssh-key", rich_help_panel="Cluster")
    app.command("status", rich_help_panel="Cluster")(status.status)
    app.command("whoami", rich_help_panel="Cluster")(whoami.whoami)
    app.command("console", rich_help_panel="Cluster")(console.console)
    app.command("up", rich_help_panel="Run corral")(up.up)
    app.command("down", rich_help_panel="Run corral")(up.down)
    app.command("server", rich_help_panel="Run corral")(server.server)
    app.command("agent", rich_help_panel="Run corral")(agent.agent)
    app.command("gateway", rich_help_panel="Run corral")(gateway.gateway)
    app.command("sim", rich_help_panel="Plan")(sim.sim)
    return app


def main() -> None:
    build_app()(prog_name="corral")


if __name__ == "__main__":
    main()
