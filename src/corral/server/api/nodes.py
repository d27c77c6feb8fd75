"""/v1/nodes"""

from __future__ import annotations

from fastapi import APIRouter

from corral.server.api.deps import CP, Caller
from corral.server.services.nodes import node_views
from corral.wire.api import NodeList

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("")
def list_nodes(caller: Caller, cp: CP) -> NodeList:
    """Every node; its network address only for a cluster admin (where the machines are
    is the operator's business, not every workspace's)."""
    with cp.store.read() as session:
        nodes = node_views(session, cp.clock.now())
    if not caller.cluster_admin:
        nodes = [n.model_copy(update={"address": None}) for n in nodes]
    return NodeList(nodes=nodes)
