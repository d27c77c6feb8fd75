"""`corral volume`: named workspace volumes that outlive pods and jobs and are mounted by them
(`--volume NAME:/path`, `volumes: {NAME: /path}` in a spec)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt, WorkspaceOpt
from corral.cli.output import CliError, age, err, esc, out, print_page, table

app = typer.Typer(
    cls=LightGroup,
    help="Workspace volumes: directories that outlive pods and jobs, mounted by name.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The volume's name.", show_default=False)]


@app.command("create")
def create(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Create a volume; mount it with --volume NAME:/path."""
    with state(ctx).client(workspace) as client:
        volume = client.create_volume(name)
    err().print(f"created volume [bold]{esc(volume.name)}[/] in workspace {esc(volume.workspace)}")


@app.command("ls")
def ls(ctx: typer.Context, workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List the workspace's volumes and who mounts them."""
    from corral.wire.pods import VolumeList

    with state(ctx).client(workspace) as client:
        volumes = client.list_volumes()
    if json_:
        print_page(VolumeList(volumes=volumes))
        return
    t = table("NAME", "USED BY", "AGE")
    for volume in volumes:
        used = ", ".join(volume.used_by) or "-"
        t.add_row(esc(volume.name), esc(used), age(volume.created_at).removesuffix(" ago"))
    out().print(t)


@app.command("delete")
def delete(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Delete a volume and its files (refused while a live pod or job mounts it)."""
    from corral.client.errors import Conflict

    with state(ctx).client(workspace) as client:
        try:
            client.delete_volume(name)
        except Conflict as exc:
            raise CliError(exc.message, hint="stop or delete what mounts it first") from None
    err().print(f"deleted volume [bold]{esc(name)}[/]")
