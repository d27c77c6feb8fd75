"""/v1/nodes"""

from __future__ import annotations

from fastapi import APIRouter

from corral.server.api.deps import CP, Caller
from corral.server.services.nodes import node_views
from corral.wire.api import NodeList

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("")
def list_nodes(_: Caller, cp: CP) -> NodeList:
    with cp.store.read() as session:
        return NodeList(nodes=node_views(session, cp.clock.now()))
