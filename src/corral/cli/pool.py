"""`corral pool`: node pools, grown and shrunk by the autoscaler as work waits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, age, esc, out, print_json, print_view, table

if TYPE_CHECKING:
    from rich.console import Console

    from corral.wire.pools import PoolView

app = typer.Typer(
    cls=LightGroup,
    help="Node pools: nodes of one shape from one provider, min..max, grown for work that "
    "waits and given back when idle (changing them: cluster admins).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The pool's name.", show_default=False)]


def _spec(values: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from corral.spec.errors import SpecError, field_errors
    from corral.spec.pool import NodePoolSpec

    try:
        return NodePoolSpec.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise SpecError("", [_flag(e) for e in field_errors(exc)]) from None


def _flag(error: Any) -> Any:
    """Name the flag a person typed, not the spec field."""
    from corral.spec.errors import FieldError

    field = str(error.path).split(".")[0]
    flag = _FLAGS.get(field, field.replace("_", "-"))
    return FieldError(f"--{flag}" if field else "", error.message)


_FLAGS = {"labels": "label"}  # spec fields whose flag is named otherwise


@app.command("create")
def create(
    ctx: typer.Context,
    name: NameArg,
    provider: Annotated[
        str,
        typer.Option(
            help="aws, or local where the server allows it (ssh pools: `corral node add --pool`).",
            show_default=False,
        ),
    ] = "",
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="Instance type from the price catalog, e.g. p5.48xlarge.",
            show_default=False,
        ),
    ] = "",
    region: Annotated[str, typer.Option(help="The provider's region.")] = "local",
    zone: Annotated[str | None, typer.Option(help="Availability zone.", show_default=False)] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Machine image (default: the provider's).", show_default=False),
    ] = None,
    spot: Annotated[bool, typer.Option("--spot", help="Spot capacity (preemptible work).")] = False,
    min_nodes: Annotated[int, typer.Option("--min", help="Nodes kept even when idle.")] = 0,
    max_nodes: Annotated[int, typer.Option("--max", help="Most nodes it may have.")] = 1,
    spare: Annotated[
        int,
        typer.Option(
            "--spare",
            help="Nodes kept idle ahead of demand: a burst's first jobs start without "
            "waiting a boot (paid for while idle).",
        ),
    ] = 0,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", "-l", help="KEY=VALUE on every node (repeatable).", show_default=False
        ),
    ] = None,
    price: Annotated[
        float | None,
        typer.Option(help="USD per node-hour, overriding the catalog's.", show_default=False),
    ] = None,
    idle_after: Annotated[
        str | None,
        typer.Option(
            help="Give a node back after it is idle this long (default 10m).", show_default=False
        ),
    ] = None,
    join_timeout: Annotated[
        str | None,
        typer.Option(
            help="Replace a node not joined this long after launch (default 10m).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a node pool (cluster admins)."""
    from corral.cli.agent import parse_labels

    if not provider:
        raise CliError("give --provider: where nodes come from, e.g. --provider aws", 2)
    if not type_:
        raise CliError("give --type: the provider's instance type, e.g. --type p5.48xlarge", 2)
    spec = _spec(
        {
            "name": name,
            "provider": provider,
            "type": type_,
            "region": region,
            "zone": zone,
            "image": image,
            "spot": spot,
            "min": min_nodes,
            "max": max_nodes,
            "spare": spare,
            "labels": parse_labels(label or []),
            "price": price,
            "idle_after": idle_after,
            "join_timeout": join_timeout,
        }
    )
    with state(ctx).client() as client:
        view = client.create_pool(spec)
    if json_:
        print_json(view.model_dump(mode="json"))
        return
    out().print(f"created pool [bold]{esc(name)}[/]: {esc(_shape(view))}, {_size(view)}")


def _shape(view: PoolView) -> str:
    s = view.spec
    gpus = f"{view.gpus_per_node} x {view.gpu_model}" if view.gpus_per_node else "no GPUs"
    kind = " spot" if s.spot else ""
    where = f"{s.region}/{s.zone}" if s.zone else s.region
    return f"{s.provider} {s.type}{kind} in {where} ({gpus})"


def _size(view: PoolView) -> str:
    spare = f", {view.spec.spare} spare" if view.spec.spare else ""
    return f"{view.nodes} node(s), min {view.spec.min}, max {view.spec.max}{spare}"


def _price(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}/h"


@app.command("ls")
def ls(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List node pools."""
    import time

    from corral.wire.pools import PoolList

    now = time.time()
    with state(ctx).client() as client:
        pools = client.list_pools()
    if json_:
        print_json(PoolList(pools=pools).model_dump(mode="json"))
        return
    t = table("NAME", "PROVIDER", "TYPE", "REGION", "NODES", "MIN", "MAX", "PRICE", "STATUS")
    for p in pools:
        resting = p.blocked_until is not None and p.blocked_until > now
        status = f"blocked: {p.blocked_reason or ''}" if resting else ""
        t.add_row(
            esc(p.spec.name),
            esc(p.spec.provider) + (" (spot)" if p.spec.spot else ""),
            esc(p.spec.type),
            esc(p.spec.region),
            str(p.nodes),
            str(p.spec.min),
            str(p.spec.max),
            _price(p.price_per_hour),
            esc(status or ("static" if p.static else "ok")),
        )
    out().print(t)


def print_pool(console: Console, view: PoolView) -> None:
    import time

    from rich.table import Table

    now = time.time()
    grid = Table.grid(padding=(0, 2))
    grid.add_row("pool", f"[bold]{esc(view.spec.name)}[/]")
    grid.add_row("shape", esc(_shape(view)))
    grid.add_row("size", esc(_size(view)))
    grid.add_row("price", esc(_price(view.price_per_hour) + " per node"))
    if view.spec.labels:
        grid.add_row("labels", esc(", ".join(f"{k}={v}" for k, v in view.spec.labels.items())))
    grid.add_row("idle after", f"{view.spec.idle_after:g} s")
    if view.blocked_until is not None and view.blocked_until > now:
        left = int(view.blocked_until - now)
        grid.add_row("blocked", esc(f"for {left} s more: {view.blocked_reason or ''}"))
    console.print(grid)
    if view.instances:
        t = table("NODE", "STATE", "AGE", "PRICE", "REASON")
        for i in view.instances:
            t.add_row(
                esc(i.node),
                esc(i.state),
                age(i.launched_at, now),
                _price(i.price_per_hour),
                esc(i.reason or ""),
            )
        console.print(t)
    if view.events:
        console.print("[bold]recent decisions[/]")
        for e in view.events:
            console.print(f"  {age(e.at, now):>10}  {esc(e.kind):<9} {esc(e.text)}", soft_wrap=True)


@app.command("get")
def get(ctx: typer.Context, name: NameArg, json_: JsonOpt = False) -> None:
    """A pool: its nodes, and why it last grew, shrank or was blocked."""
    with state(ctx).client() as client:
        view = client.get_pool(name)
    print_view(view, json_, print_pool)


@app.command("scale")
def scale(
    ctx: typer.Context,
    name: NameArg,
    min_nodes: Annotated[
        int | None, typer.Option("--min", help="Nodes kept even when idle.", show_default=False)
    ] = None,
    max_nodes: Annotated[
        int | None, typer.Option("--max", help="Most nodes it may have.", show_default=False)
    ] = None,
    spare: Annotated[
        int | None,
        typer.Option("--spare", help="Nodes kept idle ahead of demand.", show_default=False),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Change a pool's min, max and spare nodes (cluster admins)."""
    if min_nodes is None and max_nodes is None and spare is None:
        raise CliError("give --min, --max or --spare", 2)
    for flag, value in (("--min", min_nodes), ("--max", max_nodes), ("--spare", spare)):
        if value is not None and value < 0:
            raise CliError(f"{flag} {value}: expected a number of nodes >= 0", 2)
    with state(ctx).client() as client:
        view = client.scale_pool(name, min_nodes, max_nodes, spare)
    if json_:
        print_json(view.model_dump(mode="json"))
        return
    out().print(f"pool [bold]{esc(name)}[/]: {_size(view)}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", help="Drain and release its nodes first.")
    ] = False,
) -> None:
    """Delete a pool (cluster admins); refused while it has nodes unless --force."""
    with state(ctx).client() as client:
        gone = client.delete_pool(name, force)
    if gone:
        out().print(f"deleted pool [bold]{esc(name)}[/]")
    else:
        out().print(
            f"pool [bold]{esc(name)}[/]: its nodes are drained and released; "
            "the pool goes once they are"
        )
