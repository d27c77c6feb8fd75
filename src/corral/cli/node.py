"""`corral node`: the machines in the pool."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.nodeview import gpu_summary as gpu_summary  # re-exported: `corral up` uses it
from corral.cli.options import JsonOpt
from corral.cli.output import (
    CONDITION_STYLE,
    CliError,
    age,
    duration,
    err,
    esc,
    note,
    out,
    print_json,
    print_page,
    print_view,
    styled,
    table,
)

if TYPE_CHECKING:
    from corral.wire.health import FaultKind

app = typer.Typer(
    cls=LightGroup, help="Nodes: the machines running `corral agent`.", no_args_is_help=True
)


@app.command("ls")
def ls(
    ctx: typer.Context,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="A WHY column with the whole reason a node is out and its health."
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """List nodes with their condition (and why one is out), health, GPUs and heartbeat."""
    from corral.cli.nodeview import nodes_table
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
        out().print(nodes_table(nodes, wide=wide))


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


@app.command("get")
def get(ctx: typer.Context, name: NodeName, json_: JsonOpt = False) -> None:
    """Show NAME: condition and health, each GPU's signals and last Xid, the node's disks and
    memory, what runs there and the latest health events."""
    from corral.cli.nodeview import print_node

    with state(ctx).client() as client:
        detail = client.get_node(name)
    print_view(detail, json_, print_node)


@app.command("drain")
def drain(ctx: typer.Context, name: NodeName, json_: JsonOpt = False) -> None:
    """Cordon NAME and move its work elsewhere (cluster admins): training jobs are queued
    again from their last checkpoint, endpoint replicas are replaced first."""
    with state(ctx).client() as client:
        detail = client.drain_node(name)
    print_view(detail, json_, lambda _console, _detail: None)
    if not json_:
        note(esc(detail.outcome or f"node {name} drained"))


@app.command("set-healthy")
def set_healthy(ctx: typer.Context, name: NodeName, json_: JsonOpt = False) -> None:
    """Say NAME is repaired (cluster admins): it runs its checks now and comes back into
    service once they pass. Exit code 1 when they still fail."""
    with (
        state(ctx).client() as client,
        err().status(f"node {esc(name)}: waiting for its checks…"),
    ):
        detail = client.set_node_healthy(name)
    print_view(detail, json_, lambda _console, _detail: None)
    outcome = detail.outcome or ""
    if detail.repair_claim_at is not None:  # no verdict yet: the next full report decides
        if not json_:
            note(f"{esc(outcome)}\n[dim]see it come back: `corral node get {esc(name)}`[/]")
        return
    if detail.node.condition in ("ready", "cordoned"):
        if not json_:
            note(esc(outcome))
        return
    summary = detail.node.health_summary or "its checks fail"
    if json_:
        raise typer.Exit(1)
    raise CliError(
        f"node '{name}' stays out: checks still fail: {summary}",
        hint=f"see the findings: corral node get {name}",
    )


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: NodeName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget NAME (cluster admins); refused while replicas run there (drain it first). Its
    agent cannot report again without registering anew."""
    if not yes:
        try:
            sure = typer.confirm(f"delete node {name}?", default=False, err=True)
        except typer.Abort:  # no answer (stdin closed): not a yes
            sure = False
        if not sure:
            raise CliError(f"node {name} not deleted", hint="--yes deletes without asking")
    with state(ctx).client() as client:
        client.delete_node(name)
    note(f"deleted node [bold]{esc(name)}[/]")


# Flag -> (fault kind, what it does); exactly one is given.
_FAULT_FLAGS: dict[str, tuple[FaultKind, str]] = {
    "xid": ("xid", "an Xid"),
    "ecc": ("ecc_uncorrected", "an uncorrected ECC error"),
    "remap_failed": ("remap_failed", "a failed row remapping"),
    "remap_pending": ("remap_pending", "a pending row remapping"),
    "thermal": ("thermal", "thermal throttling"),
    "nvlink_down": ("nvlink_down", "an NVLink down"),
    "vanish": ("vanish", "the GPU gone from the bus"),
    "clear": ("clear", "every fault cleared"),
    "reboot": ("reboot", "a reboot (faults cleared, a new boot id)"),
}
_FAULT_HELP = "--xid CODE, --ecc, --remap-failed, --remap-pending, --thermal, --nvlink-down, "
_FAULT_HELP += "--vanish, --clear or --reboot"


def _flag(help_text: str) -> object:
    return typer.Option(help=help_text, rich_help_panel="Fault (exactly one)")


@app.command("inject-fault")
def inject_fault(
    ctx: typer.Context,
    name: NodeName,
    gpu: Annotated[
        int | None,
        typer.Option(
            help="The GPU's index (every fault but --clear and --reboot needs one; "
            "--clear without it clears every GPU).",
            min=0,
            show_default=False,
        ),
    ] = None,
    xid: Annotated[
        int | None,
        typer.Option(
            help="Report Xid CODE, e.g. 79 (fell off the bus).",
            metavar="CODE",
            min=0,
            show_default=False,
            rich_help_panel="Fault (exactly one)",
        ),
    ] = None,
    subcode: Annotated[
        int | None,
        typer.Option(
            help="With --xid 144-150: the NVLink error's subcode.", min=0, show_default=False
        ),
    ] = None,
    ecc: Annotated[bool, _flag("An uncorrected ECC error.")] = False,
    remap_failed: Annotated[bool, _flag("A row remapping that failed.")] = False,
    remap_pending: Annotated[bool, _flag("A row remapping pending a GPU reset.")] = False,
    thermal: Annotated[bool, _flag("Thermal throttling.")] = False,
    nvlink_down: Annotated[bool, _flag("An NVLink down.")] = False,
    vanish: Annotated[bool, _flag("The GPU falls off the bus.")] = False,
    clear: Annotated[bool, _flag("Clear the GPU's faults (every GPU's without --gpu).")] = False,
    reboot: Annotated[bool, _flag("Act as if the host rebooted: faults cleared.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Make a fake-GPU node's checks see a fault (cluster admins; for tests and demos).

    Only a node whose agent runs with --fake-gpus takes faults; its next health check
    reports the fault and corral reacts as it would to a real one.
    """
    given = {
        "xid": xid is not None,
        "ecc": ecc,
        "remap_failed": remap_failed,
        "remap_pending": remap_pending,
        "thermal": thermal,
        "nvlink_down": nvlink_down,
        "vanish": vanish,
        "clear": clear,
        "reboot": reboot,
    }
    chosen = [flag for flag, on in given.items() if on]
    if len(chosen) != 1:
        many = ", ".join("--" + c.replace("_", "-") for c in chosen)
        what = f"one fault at a time, not {many}" if chosen else "a fault"
        raise CliError(f"inject-fault needs {what}: {_FAULT_HELP}", code=2)
    if subcode is not None and xid is None:
        raise CliError("--subcode goes with --xid", code=2)
    kind, words = _FAULT_FLAGS[chosen[0]]
    with state(ctx).client() as client:
        detail = client.inject_fault(name, kind, gpu=gpu, xid=xid, subcode=subcode)
    print_view(detail, json_, lambda _console, _detail: None)
    if not json_:
        where = f" on GPU {gpu}" if gpu is not None else ""
        what = f"Xid {xid}" if xid is not None else words
        note(
            f"node [bold]{esc(name)}[/]: {esc(what)}{where} injected; its next check reports "
            f"it (`corral node get {esc(name)}`)"
        )


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
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            help="KEY=VALUE given to every node registering with it (repeatable); the only "
            "way to set pool, instance-type, spot, price-per-hour.",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a join token (cluster admins). Its secret is printed once."""
    from corral.cli.agent import parse_labels
    from corral.spec.units import parse_duration_s

    try:
        ttl_s = None if ttl.strip().lower() == "never" else parse_duration_s(ttl)
    except ValueError as exc:
        raise CliError(f"--ttl: {exc}", code=2) from None
    with state(ctx).client() as client:
        tok = client.create_join_token(
            name=name, ttl_s=ttl_s, max_uses=max_uses, labels=parse_labels(label or []) or None
        )
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


# `node add` and `node remove` live in cli/nodeadd.py and cli/noderemove.py (ssh, the agent
# bundle); these modules import nothing heavy until a command runs.
from corral.cli import nodeadd as _nodeadd  # noqa: E402
from corral.cli import noderemove as _noderemove  # noqa: E402

app.command("add")(_nodeadd.add)
app.command("remove")(_noderemove.remove)
