"""`corral workspace`: tenants that own jobs and tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, age, esc, out, print_json, print_page, table

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


def _since(value: str) -> float:
    """`7d`, `24h`, `90m` before now -> epoch seconds."""
    import time

    from corral.spec.units import parse_duration_s

    try:
        return time.time() - parse_duration_s(value)
    except ValueError as exc:
        raise CliError(f"--since {value!r}: {exc}", code=2) from None


@app.command("usage")
def usage(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Argument(
            help="The workspace (default: every one this token may see).", show_default=False
        ),
    ] = None,
    since: Annotated[str, typer.Option(help="How far back: 7d, 24h, 90m.")] = "7d",
    json_: JsonOpt = False,
) -> None:
    """GPU-hours and what they cost, per workspace (a member sees their own; cluster
    admins every workspace)."""
    from corral.wire.pools import UsageList

    start = _since(since)
    with state(ctx).client() as client:
        rows = [client.workspace_usage(workspace, start)] if workspace else client.usage(start)
    if json_:
        print_json(UsageList(usage=rows).model_dump(mode="json"))
        return
    t = table("WORKSPACE", "JOBS", "GPU-HOURS", "COST")
    for row in rows:
        if row.usd is None:
            cost = f"unknown ({row.unpriced_gpu_hours:.2f} GPU-h unpriced)"
        else:
            cost = f"${row.usd:,.2f}"
        t.add_row(esc(row.workspace), str(row.jobs), f"{row.gpu_hours:.2f}", esc(cost))
    out().print(t)
