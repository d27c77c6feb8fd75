"""`corral status`: the cluster on one screen — nodes, GPUs, work, endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from corral.cli.config import state
from corral.cli.options import JsonOpt
from corral.cli.output import print_json

if TYPE_CHECKING:
    from rich.console import Console

    from corral.wire.api import StatusView


def status(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """Nodes (ready, cordoned, unhealthy, lost), GPUs used and free by model, jobs running
    and pending (and why they wait), endpoints ready; per workspace for a cluster admin."""
    from corral.cli.output import out

    with state(ctx).client() as client:
        view = client.status()
        server = client.server
    if json_:
        print_json(view.model_dump(mode="json"))
        return
    print_status(out(), view, server)


def print_status(console: Console, view: StatusView, server: str = "") -> None:
    from rich.table import Table

    from corral.cli.output import CONDITION_STYLE, esc, styled, table

    n = view.nodes
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if server:
        grid.add_row("server", esc(server))
    counts = [
        styled(f"{count} {word}", CONDITION_STYLE[word] if count else None)
        for word, count in (
            ("ready", n.ready),
            ("cordoned", n.cordoned),
            ("unhealthy", n.unhealthy),
            ("lost", n.lost),
        )
        if count or word == "ready"
    ]
    grid.add_row("nodes", f"{n.total} · " + ", ".join(counts) if n.total else "none registered")
    gpus = ", ".join(f"{esc(g.model)} {g.used}/{g.total} used, {g.free} free" for g in view.gpus)
    grid.add_row("gpus", gpus or "none")
    w = view.work
    scope = "every workspace" if view.scope == "*" else f"workspace {esc(view.scope)}"
    grid.add_row("jobs", f"{w.running} running, {w.pending} pending ({scope})")
    grid.add_row("endpoints", f"{w.endpoints_ready} of {w.endpoints} ready")
    grid.add_row("pods", f"{w.pods_running} of {w.pods} running")
    console.print(grid)
    if w.pending_reasons:
        console.print()
        console.print("[bold]why jobs wait[/]")
        t = table("JOBS", "REASON")
        for r in w.pending_reasons:
            t.add_row(str(r.jobs), esc(r.reason))
        console.print(t)
    if view.workspaces:
        console.print()
        console.print("[bold]workspaces[/]")
        t = table("WORKSPACE", "RUNNING", "PENDING", "GPUS")
        for ws in view.workspaces:
            t.add_row(esc(ws.name), str(ws.running), str(ws.pending), str(ws.gpus_used))
        console.print(t)
