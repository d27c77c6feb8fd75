"""`corral token`: API tokens for people and automation."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import age, err, esc, out, print_json, print_page, table

app = typer.Typer(cls=LightGroup, help="API tokens.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    role: Annotated[
        Literal["admin", "member", "viewer", "metrics"],
        typer.Option(
            help="admin: everything in its workspace (or the cluster); member: run "
            "and manage workloads; viewer: read only; metrics: read the server's /metrics "
            "and nothing else (cluster-wide, for a Prometheus scraper)."
        ),
    ] = "member",
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Workspace the token acts in (default: this CLI's; an admin token without one "
            "acts on the whole cluster).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="A label to recognise it by.", show_default=False)
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a token. Its secret is printed once and cannot be shown again."""
    with state(ctx).client() as client:
        if workspace is None and role in ("member", "viewer"):
            # A member or viewer acts in some workspace: the one this CLI acts in (the
            # configured one, else the token's own, else `default` for a cluster admin).
            workspace = client.workspace
        tok = client.create_token(role=role, workspace=workspace, name=name)
    if json_:
        print_json(tok.model_dump(mode="json"))
        return
    where = f"workspace {esc(tok.workspace)}" if tok.workspace else "the whole cluster"
    err().print(f"created {esc(tok.role)} token [bold]{esc(tok.name)}[/] for {where}")
    # The secret alone on stdout, so that `TOKEN=$(corral token create)` works.
    out().print(esc(tok.token or ""), soft_wrap=True)
    err().print(
        "[yellow]save it now: it will not be shown again[/] "
        '(use it as CORRAL_TOKEN, or as "token" in config.json)'
    )


@app.command("ls")
def ls(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Only this workspace's tokens (default: all this token administers).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List tokens (admins): a workspace admin sees its workspace's, a cluster admin all.

    Secrets are never shown: they exist only where they were saved at creation.
    """
    from corral.wire.api import TokenList

    with state(ctx).client() as client:
        tokens = client.list_tokens(workspace)
    if json_:
        print_page(TokenList(tokens=tokens))
        return
    t = table("NAME", "ROLE", "WORKSPACE", "CREATED")
    for tok in tokens:
        t.add_row(
            esc(tok.name),
            esc(tok.role),
            esc(tok.workspace) if tok.workspace else "[dim](cluster)[/]",
            age(tok.created_at),
        )
    out().print(t)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name (see `corral token ls`).")],
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            help="The workspace the token belongs to (default: yours; for a cluster admin, "
            "the cluster-wide tokens).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Revoke a token: it stops working at once on this server, within 10 s on others."""
    with state(ctx).client() as client:
        client.revoke_token(name, workspace)
    where = f" of workspace {esc(workspace)}" if workspace else ""
    err().print(f"revoked token [bold]{esc(name)}[/]{where}")
