"""/v1/status: nodes, GPUs, work and endpoints in one answer (`corral status`)."""

from __future__ import annotations

from fastapi import APIRouter

from corral.server.api.deps import CP, Caller
from corral.server.api.errors import ApiError
from corral.server.services.identity import workspace_by_name
from corral.server.services.status import status
from corral.wire.api import StatusView

router = APIRouter(prefix="/v1", tags=["status"])


@router.get("/status")
def get_status(caller: Caller, cp: CP) -> StatusView:
    """A cluster admin sees every workspace's work; anyone else the fleet's totals and
    their own workspace's work, never another's."""
    with cp.store.read() as session:
        if caller.cluster_admin:
            return status(session, None)
        workspace = workspace_by_name(session, caller.workspace or "")
        if workspace is None:
            raise ApiError(404, "not_found", f"workspace '{caller.workspace}' not found")
        return status(session, workspace)
