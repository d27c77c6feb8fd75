"""`corral node`: the machines in the pool."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import (
    CONDITION_STYLE,
    age,
    duration,
    err,
    esc,
    format_mib,
    note,
    out,
    print_json,
    print_page,
    print_view,
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
    json_: JsonOpt = False,
) -> None:
    """List nodes with their condition, GPUs and last heartbeat."""
    from corral.wire.api import NodeList

    with state(ctx).client() as client:
        nodes = client.list_nodes()
    if json_:
        print_page(NodeList(nodes=nodes))
    elif not nodes:
        note(
            "no nodes yet; `corral up` starts one here, or run `corral agent --server URL "
            "--join-token T` on a machine"
        )
    else:
        out().print(nodes_table(nodes))


NodeName = Annotated[str, typer.Argument(help="The node's name (see `corral node ls`).")]


@app.command("cordon")
def cordon(ctx: typer.Context, name: NodeName, json_: JsonOpt = False) -> None:
    """Keep NAME from taking new work; what runs there keeps running (cluster admins)."""
    with state(ctx).client() as client:
        node = client.cordon_node(name)
    print_view(node, json_, lambda _console, _node: None)
    if not json_:
        note(
            f"node [bold]{esc(name)}[/] is cordoned: it keeps what runs there and takes "
            f"nothing new (`corral node uncordon {esc(name)}` gives it back)"
        )


@app.command("uncordon")
def uncordon(ctx: typer.Context, name: NodeName, json_: JsonOpt = False) -> None:
    """Let NAME take work again (cluster admins); what waited for room is placed now."""
    with state(ctx).client() as client:
        node = client.uncordon_node(name)
    print_view(node, json_, lambda _console, _node: None)
    if not json_:
        shown = styled(node.condition, CONDITION_STYLE.get(node.condition))
        note(f"node [bold]{esc(name)}[/] is {shown}: it takes work again")


join_app = typer.Typer(
    cls=LightGroup,
    help="Join tokens: what `corral agent --join-token` registers a node with.",
    no_args_is_help=True,
)
app.add_typer(join_app, name="join-token")


@join_app.command("create")
def join_create(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option(help="A label to recognise it by.", show_default=False)
    ] = None,
    ttl: Annotated[
        str,
        typer.Option(help="How long it lets nodes register, e.g. 30m, 24h, 7d; 'never'."),
    ] = "24h",
    max_uses: Annotated[
        int | None,
        typer.Option(help="How many registrations it allows (default: unlimited).", min=1),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a join token (cluster admins). Its secret is printed once."""
    from corral.cli.output import CliError
    from corral.spec.units import parse_duration_s

    try:
        ttl_s = None if ttl.strip().lower() == "never" else parse_duration_s(ttl)
    except ValueError as exc:
        raise CliError(f"--ttl: {exc}", code=2) from None
    with state(ctx).client() as client:
        tok = client.create_join_token(name=name, ttl_s=ttl_s, max_uses=max_uses)
    if json_:
        print_json(tok.model_dump(mode="json"))
        return
    limits = "never expires" if tok.expires_at is None else f"expires in {duration(ttl_s or 0)}"
    uses = "any number of nodes" if tok.max_uses is None else f"at most {tok.max_uses} nodes"
    err().print(f"created join token [bold]{esc(tok.name)}[/]: {limits}, {uses}")
    # The secret alone on stdout, so that `JOIN=$(corral node join-token create)` works.
    out().print(esc(tok.token or ""), soft_wrap=True)
    err().print("[yellow]save it now: it will not be shown again[/]")


@join_app.command("ls")
def join_ls(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """List join tokens (cluster admins), with their state and uses; never their secrets."""
    from corral.wire.api import JoinTokenList

    with state(ctx).client() as client:
        tokens = client.list_join_tokens()
    if json_:
        print_page(JoinTokenList(join_tokens=tokens))
        return
    now = time.time()
    t = table("NAME", "STATE", "USES", "EXPIRES", "CREATED")
    for tok in tokens:
        expires = "never" if tok.expires_at is None else _until(tok.expires_at, now)
        limit = "∞" if tok.max_uses is None else str(tok.max_uses)
        style = None if tok.state == "active" else "dim"
        t.add_row(
            esc(tok.name),
            styled(tok.state, style),
            f"{tok.uses}/{limit}",
            expires,
            age(tok.created_at, now),
        )
    out().print(t)


def _until(ts: float, now: float) -> str:
    return f"in {duration(ts - now)}" if ts > now else f"{duration(now - ts)} ago"


@join_app.command("revoke")
def join_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The join token's name (see `ls`).")],
) -> None:
    """Revoke a join token: no node can register with it any more; registered nodes stay."""
    with state(ctx).client() as client:
        client.revoke_join_token(name)
    err().print(f"revoked join token [bold]{esc(name)}[/]")
