"""/v1/quotas and /v1/workspaces/{workspace}/quota: guaranteed GPUs per workspace."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from corral.server.api.deps import CP, Caller, ReadableWorkspace
from corral.server.api.paging import Paging
from corral.server.services import quotas as service
from corral.server.services.pages import keyset_page
from corral.server.store.tables import Workspace
from corral.wire.api import QuotaList, QuotaSet, QuotaView

router = APIRouter(prefix="/v1", tags=["quotas"])


@router.get("/quotas")
def list_quotas(caller: Caller, cp: CP, page: Paging) -> QuotaList:
    """Every workspace's quota for a cluster admin; the caller's own otherwise. In order
    of workspace name, a page at a time."""
    query = select(Workspace)
    if not caller.cluster_admin:
        query = query.where(Workspace.id == caller.workspace_id)
    with cp.store.read() as session:
        found = keyset_page(session, query, [Workspace.name], page)
        return QuotaList(
            quotas=service.quota_views(session, found.items), next_cursor=found.next_cursor
        )


@router.get("/workspaces/{workspace}/quota")
def get_quota(workspace: ReadableWorkspace, cp: CP) -> QuotaView:
    with cp.store.read() as session:
        return service.quota_views(session, [workspace])[0]


@router.put("/workspaces/{workspace}/quota")
def set_quota(body: QuotaSet, workspace: ReadableWorkspace, caller: Caller, cp: CP) -> QuotaView:
    """Replace the workspace's guaranteed GPUs (cluster admins only)."""
    with cp.store.transaction() as session:
        service.set_quota(session, caller, workspace, body.gpus)
    cp.wake_scheduler()
    with cp.store.read() as session:
        return service.quota_views(session, [workspace])[0]
