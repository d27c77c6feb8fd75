"""`corral quota`: guaranteed GPUs per workspace and GPU model."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, esc, out, print_json, print_page, table

app = typer.Typer(
    cls=LightGroup,
    help="Quotas: GPUs guaranteed to a workspace. GPUs nobody is guaranteed are a shared "
    "pool for any workspace's jobs, in queue order; beyond both, idle GPUs may be "
    "borrowed by preemptible jobs and are taken back when the owner needs them.",
    no_args_is_help=True,
)


def parse_guarantees(items: list[str]) -> dict[str, int]:
    """["H100:16", "8"] -> {"H100": 16, "*": 8}; a bare number counts any GPU model."""
    result: dict[str, int] = {}
    for item in items:
        model, sep, count = item.rpartition(":")
        if not sep:
            model = "*"
        try:
            value = int(count)
        except ValueError:
            value = -1
        if value < 0 or (sep and not model):
            raise CliError(
                f"--gpus {item!r}: expected MODEL:COUNT (e.g. H100:16) or a COUNT of any model",
                code=2,
            )
        result[model] = value
    return result


@app.command("set")
def set_(
    ctx: typer.Context,
    workspace: Annotated[str, typer.Argument(help="The workspace.", show_default=False)],
    gpus: Annotated[
        list[str],
        typer.Option(
            "--gpus",
            "-g",
            help="MODEL:COUNT guaranteed (repeatable); a bare COUNT means any model; "
            "MODEL:0 removes a guarantee.",
            show_default=False,
        ),
    ],
    json_: JsonOpt = False,
) -> None:
    """Set a workspace's guaranteed GPUs, replacing what it had (cluster admins only)."""
    wanted = parse_guarantees(gpus)
    with state(ctx).client() as client:
        current = client.get_quota(workspace).guaranteed
        quota = client.set_quota(workspace, {**current, **wanted})
    if json_:
        print_json(quota.model_dump(mode="json"))
        return
    shown = ", ".join(f"{n}×{m}" for m, n in quota.guaranteed.items()) or "nothing"
    out().print(f"workspace [bold]{esc(workspace)}[/] is guaranteed {esc(shown)}")


@app.command("ls")
def ls(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """Each workspace's guaranteed and used GPUs (all of them for a cluster admin)."""
    from corral.wire.api import QuotaList

    with state(ctx).client() as client:
        quotas = client.list_quotas()
    if json_:
        print_page(QuotaList(quotas=quotas))
        return
    t = table("WORKSPACE", "GPU MODEL", "GUARANTEED", "USED")
    for quota in quotas:
        models = sorted(set(quota.guaranteed) | set(quota.used)) or ["-"]
        for model in models:
            t.add_row(
                esc(quota.workspace),
                esc(model),
                str(quota.guaranteed.get(model, "-")),
                str(quota.used.get(model, 0)),
            )
    out().print(t)
