"""`corral workspace`: tenants that own jobs and tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import age, esc, out, print_page, table

app = typer.Typer(
    cls=LightGroup,
    help="Workspaces: tenants that own jobs, tokens and quotas.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="1-63 lowercase letters, digits and '-'.", show_default=False)
    ],
) -> None:
    """Create a workspace (cluster admins only)."""
    with state(ctx).client() as client:
        ws = client.create_workspace(name)
    out().print(f"created workspace [bold]{esc(ws.name)}[/]")
    out().print(f"  a token for it:  corral token create --workspace {esc(ws.name)}")


@app.command("ls")
def ls(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """List the workspaces this token can see."""
    from corral.wire.api import WorkspaceList

    with state(ctx).client() as client:
        workspaces = client.list_workspaces()
    if json_:
        print_page(WorkspaceList(workspaces=workspaces))
        return
    t = table("NAME", "CREATED")
    for ws in workspaces:
        t.add_row(esc(ws.name), age(ws.created_at))
    out().print(t)
