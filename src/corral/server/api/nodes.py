"""/v1/nodes"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Response
from sqlalchemy import select

from corral.server.api.deps import CP, Caller, retry_stale
from corral.server.api.paging import Paging
from corral.server.errors import Conflict
from corral.server.services import node_ops
from corral.server.services.effects import Effects
from corral.server.services.node_detail import node_detail
from corral.server.services.nodes import node_view, node_views
from corral.server.services.pages import list_page
from corral.server.store.tables import Node
from corral.wire.api import NodeList, NodeView
from corral.wire.health import CheckNow, InjectFault
from corral.wire.nodes import FaultRequest, NodeDetail

# How long `set-healthy` waits for the node's next checks before answering "still checking".
SET_HEALTHY_WAIT_S = 15.0

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("")
def list_nodes(caller: Caller, cp: CP, page: Paging) -> NodeList:
    """Nodes by name, a page at a time; a node's network address only for a cluster admin
    (where the machines are is the operator's business, not every workspace's)."""
    with cp.store.read() as session:
        found = list_page(node_views(session, cp.clock.now()), lambda n: (n.name,), (str,), page)
    nodes = found.items
    if not caller.cluster_admin:
        nodes = [n.model_copy(update={"address": None}) for n in nodes]
    return NodeList(nodes=nodes, next_cursor=found.next_cursor)


@router.post("/{name}/cordon")
def cordon_node(name: str, caller: Caller, cp: CP) -> NodeView:
    """The node keeps what runs there and takes nothing new (cluster admins)."""

    def write() -> NodeView:
        with cp.store.transaction() as session:
            node, _ = node_ops.cordon(session, caller, name, cp.clock.now())
            return node_view(session, node, cp.clock.now())

    return retry_stale(write)


@router.post("/{name}/uncordon")
def uncordon_node(name: str, caller: Caller, cp: CP) -> NodeView:
    """The node takes work again (cluster admins); what waited for it is placed now."""

    def write() -> tuple[NodeView, bool]:
        with cp.store.transaction() as session:
            node, changed = node_ops.uncordon(session, caller, name, cp.clock.now())
            return node_view(session, node, cp.clock.now()), changed

    view, changed = retry_stale(write)
    if changed:
        cp.wake_scheduler()
    return view


@router.get("/{name}")
def get_node(name: str, caller: Caller, cp: CP) -> NodeDetail:
    """One node: its GPUs' signals and health, its health events, what runs there (a
    workspace's token sees its own workloads only)."""
    with cp.store.read() as session:
        return node_detail(session, caller, name, cp.clock.now())


@router.post("/{name}/drain")
def drain_node(name: str, caller: Caller, cp: CP) -> NodeDetail:
    """Cordon the node and move its work elsewhere (cluster admins)."""

    def write() -> tuple[NodeDetail, Effects, str]:
        with cp.store.transaction() as session:
            _, effects, outcome = node_ops.drain(session, caller, name, cp.clock.now())
            return node_detail(session, caller, name, cp.clock.now()), effects, outcome

    detail, effects, outcome = retry_stale(write)
    cp.apply(effects)
    return detail.model_copy(update={"outcome": outcome})


@router.delete("/{name}", status_code=204)
async def delete_node(name: str, caller: Caller, cp: CP) -> Response:
    """Forget the node (cluster admins); refused while replicas run there. Its agent's
    connection is closed: it registers again only with a join token."""

    def write() -> str:
        with cp.store.transaction() as session:
            return node_ops.delete_node(session, caller, name)

    node_id = await asyncio.to_thread(retry_stale, write)
    await cp.hub.hang_up(node_id)
    return Response(status_code=204)


@router.post("/{name}/faults", status_code=202)
async def inject_fault(name: str, body: FaultRequest, caller: Caller, cp: CP) -> NodeDetail:
    """Make a fake-GPU node's checks see a fault (cluster admins; tests and demos)."""

    def write() -> tuple[str, InjectFault]:
        with cp.store.transaction() as session:
            message = node_ops.fault(session, caller, name, body, cp.clock.now())
            node = session.scalars(select(Node.id).where(Node.name == name)).one()
            return node, message

    node_id, message = await asyncio.to_thread(retry_stale, write)
    if not await cp.hub.tell(node_id, message):
        raise Conflict(f"node '{name}' is not connected: its agent must be running to inject")
    with cp.store.read() as session:
        return node_detail(session, caller, name, cp.clock.now())


@router.post("/{name}/set-healthy")
async def set_healthy(name: str, caller: Caller, cp: CP) -> NodeDetail:
    """An operator repaired the node: it comes back once its next checks pass (they run
    now). Answers when they have, or after SET_HEALTHY_WAIT_S with the claim pending."""

    def write() -> tuple[str, float]:
        with cp.store.transaction() as session:
            node = node_ops.claim_repaired(session, caller, name, cp.clock.now())
            return node.id, node.repair_claim_at or 0.0

    node_id, claim = await asyncio.to_thread(retry_stale, write)
    connected = await cp.hub.tell(node_id, CheckNow())
    deadline = time.monotonic() + (SET_HEALTHY_WAIT_S if connected else 0.0)

    def read() -> NodeDetail:
        with cp.store.read() as session:
            return node_detail(session, caller, name, cp.clock.now())

    while True:
        detail = await asyncio.to_thread(read)
        if detail.repair_claim_at != claim or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if detail.repair_claim_at == claim:
        why = "its agent is not connected" if not connected else "no report yet"
        outcome = f"checking: {why}; the node comes back when its next checks pass"
    elif detail.node.condition in ("ready", "cordoned"):
        outcome = f"node '{name}' is in service again: its checks pass"
    else:
        outcome = f"node '{name}' stays out: {detail.node.health_summary or 'its checks fail'}"
    return detail.model_copy(update={"outcome": outcome})
