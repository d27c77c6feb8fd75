"""/v1/pools (node pools: cluster admins change them, any token reads) and the GPU usage
and cost of workspaces (/v1/usage, /v1/workspaces/{workspace}/usage)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from corral.server.api.deps import CP, Caller, ReadableWorkspace, retry_stale
from corral.server.services import costs
from corral.server.services import pools as service
from corral.server.store.tables import Workspace
from corral.spec.pool import NodePoolSpec, PoolScale
from corral.wire.pools import PoolList, PoolView, UsageList, WorkspaceUsage

router = APIRouter(prefix="/v1", tags=["pools"])

DEFAULT_SINCE_S = 7 * 86400.0
SINCE = Query(default=None, description="epoch seconds; default: 7 days", allow_inf_nan=False)


@router.get("/pools")
def list_pools(caller: Caller, cp: CP) -> PoolList:
    with cp.store.read() as session:
        return PoolList(pools=service.pool_views(session, cp.catalog))


@router.post("/pools", status_code=201)
def create_pool(spec: NodePoolSpec, caller: Caller, cp: CP) -> PoolView:
    """A new pool; it grows to `min` at once and up to `max` as work waits."""
    service.check_allowed(spec, cp.options.allow_local_pools)
    with cp.store.transaction() as session:
        row = service.create_pool(session, caller, spec, cp.catalog, cp.clock.now())
        view = service.pool_view(session, row, cp.catalog, detail=True, admin=caller.cluster_admin)
    cp.wake_pools()
    return view


@router.get("/pools/{name}")
def get_pool(name: str, caller: Caller, cp: CP) -> PoolView:
    """The pool, its nodes and why it last grew, shrank or was blocked."""
    with cp.store.read() as session:
        row = service.get_pool_row(session, name)
        return service.pool_view(session, row, cp.catalog, detail=True, admin=caller.cluster_admin)


@router.patch("/pools/{name}")
def scale_pool(name: str, body: PoolScale, caller: Caller, cp: CP) -> PoolView:
    def write() -> PoolView:
        with cp.store.transaction() as session:
            row = service.scale_pool(session, caller, name, body, cp.clock.now())
            return service.pool_view(
                session, row, cp.catalog, detail=True, admin=caller.cluster_admin
            )

    view = retry_stale(write)
    cp.wake_pools()
    return view


@router.delete("/pools/{name}")
def delete_pool(name: str, caller: Caller, cp: CP, force: bool = False) -> Response:
    """204 when gone; 202 when its nodes are being drained and released first (--force)."""

    def write() -> tuple[bool, object]:
        with cp.store.transaction() as session:
            return service.delete_pool(session, caller, name, force, cp.clock.now())

    gone, effects = retry_stale(write)
    from corral.server.services.effects import Effects

    assert isinstance(effects, Effects)
    cp.apply(effects)
    cp.wake_pools()
    return Response(status_code=204 if gone else 202)


@router.get("/usage")
def list_usage(
    caller: Caller,
    cp: CP,
    since: float | None = SINCE,
) -> UsageList:
    """GPU-hours and cost per workspace: every workspace for a cluster admin, the
    caller's own otherwise."""
    now = cp.clock.now()
    start = now - DEFAULT_SINCE_S if since is None else since
    with cp.store.read() as session:
        if caller.cluster_admin:
            from sqlalchemy import select

            workspaces = list(session.scalars(select(Workspace).order_by(Workspace.name)))
        else:
            found = session.get(Workspace, caller.workspace_id) if caller.workspace_id else None
            workspaces = [found] if found is not None else []
        return UsageList(usage=costs.workspace_usage(session, workspaces, cp.catalog, start, now))


@router.get("/workspaces/{workspace}/usage")
def get_usage(
    workspace: ReadableWorkspace,
    cp: CP,
    since: float | None = SINCE,
) -> WorkspaceUsage:
    now = cp.clock.now()
    start = now - DEFAULT_SINCE_S if since is None else since
    with cp.store.read() as session:
        return costs.workspace_usage(session, [workspace], cp.catalog, start, now)[0]
