"""/v1/nodes"""

from __future__ import annotations

from fastapi import APIRouter

from corral.server.api.deps import CP, Caller, retry_stale
from corral.server.api.paging import Paging
from corral.server.services import node_ops
from corral.server.services.nodes import node_view, node_views
from corral.server.services.pages import list_page
from corral.wire.api import NodeList, NodeView

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
            node, _ = node_ops.cordon(session, caller, name)
            return node_view(session, node, cp.clock.now())

    return retry_stale(write)


@router.post("/{name}/uncordon")
def uncordon_node(name: str, caller: Caller, cp: CP) -> NodeView:
    """The node takes work again (cluster admins); what waited for it is placed now."""

    def write() -> tuple[NodeView, bool]:
        with cp.store.transaction() as session:
            node, changed = node_ops.uncordon(session, caller, name)
            return node_view(session, node, cp.clock.now()), changed

    view, changed = retry_stale(write)
    if changed:
        cp.wake_scheduler()
    return view
