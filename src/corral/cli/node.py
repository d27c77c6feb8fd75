"""`corral node`: the machines in the pool."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.output import (
    CONDITION_STYLE,
    duration,
    esc,
    format_mib,
    note,
    out,
    print_json,
    styled,
    table,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from corral.wire.api import NodeView

app = typer.Typer(
    cls=LightGroup, help="Nodes: the machines running `corral agent`.", no_args_is_help=True
)


def gpu_summary(node: NodeView) -> str:
    """E.g. `8×H100 (fake)`; models are counted apart when a node mixes them."""  # noqa: RUF002
    if not node.gpus:
        return "-"
    counts = Counter(g.model for g in node.gpus)
    text = ", ".join(f"{n}×{model}" for model, n in counts.items())
    if node.gpu_backend not in ("nvml", "none", ""):
        text += f" ({node.gpu_backend})"
    return text


def gpu_use(node: NodeView) -> str:
    if not node.gpus:
        return "-"
    used = sum(1 for g in node.gpus if g.allocated)
    text = f"{used}/{len(node.gpus)}"
    sick = sum(1 for g in node.gpus if not g.healthy)
    if sick:
        text += f" [red]({sick} unhealthy)[/]"
    return text


def heartbeat(node: NodeView, now: float) -> str:
    age = node.heartbeat_age_s
    if age is None and node.last_heartbeat_at is not None:
        age = now - node.last_heartbeat_at
    if age is None:
        return "never"
    text = f"{duration(max(0.0, age))} ago"
    return text if node.connected else f"{text} [dim](disconnected)[/]"


def nodes_table(nodes: list[NodeView], now: float | None = None) -> RenderableType:
    now = time.time() if now is None else now
    t = table("NAME", "CONDITION", "GPUS", "ALLOCATED", "CPUS", "MEMORY", "HEARTBEAT")
    for n in sorted(nodes, key=lambda n: n.name):
        t.add_row(
            esc(n.name),
            styled(n.condition, CONDITION_STYLE.get(n.condition)),
            esc(gpu_summary(n)),
            gpu_use(n),
            f"{n.cpus:g}",
            format_mib(n.memory_mb),
            heartbeat(n, now),
        )
    return t


@app.command("ls")
def ls(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print the API's JSON document.")] = False,
) -> None:
    """List nodes with their condition, GPUs and last heartbeat."""
    from corral.wire.api import NodeList

    with state(ctx).client() as client:
        nodes = client.list_nodes()
    if json_:
        print_json(NodeList(nodes=nodes).model_dump(mode="json"))
    elif not nodes:
        note(
            "no nodes yet; `corral up` starts one here, or run `corral agent --server URL "
            "--join-token T` on a machine"
        )
    else:
        out().print(nodes_table(nodes))
