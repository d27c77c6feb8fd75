"""/v1/nodes"""

from __future__ import annotations

from fastapi import APIRouter

from corral.server.api.deps import CP, Caller
from corral.server.api.paging import Paging
from corral.server.services.nodes import node_views
from corral.server.services.pages import list_page
from corral.wire.api import NodeList

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
