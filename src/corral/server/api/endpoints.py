"""/v1/workspaces/{workspace}/endpoints and the gateways' /v1/gateway/routes, /wake."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request

from corral.server.api.deps import CP, Caller, ReadableWorkspace, WritableWorkspace, retry_stale
from corral.server.api.paging import Paging
from corral.server.loads import desired_replicas
from corral.server.runtime import ControlPlane
from corral.server.services import endpoints as service
from corral.server.services.fleet_models import resource_warnings
from corral.server.services.pages import list_page
from corral.spec.endpoint import EndpointSpec
from corral.wire.api import EndpointList, EndpointView
from corral.wire.gateway import GatewayLoad, RouteTable, Wake

router = APIRouter(prefix="/v1/workspaces/{workspace}/endpoints", tags=["endpoints"])
gateway_router = APIRouter(prefix="/v1/gateway", tags=["gateway"])


def _url(view: EndpointView, cp: ControlPlane) -> EndpointView:
    base = cp.options.gateway_public_url
    return view.model_copy(update={"url": f"{base.rstrip('/')}{view.path}"}) if base else view


@router.post("", status_code=201)
def deploy(spec: EndpointSpec, workspace: WritableWorkspace, cp: CP) -> EndpointView:
    with cp.store.transaction() as session:
        endpoint = service.deploy(session, workspace, spec, cp.clock.now())
        view = service.endpoint_view(session, endpoint, workspace.name)
        warnings = resource_warnings(session, spec.resources)
    if warnings:
        view = view.model_copy(update={"warnings": warnings})
    cp.wake_endpoints()
    cp.poke_routes()
    return _url(view, cp)


@router.get("")
def list_endpoints(workspace: ReadableWorkspace, cp: CP, page: Paging) -> EndpointList:
    with cp.store.read() as session:
        views = service.list_views(session, workspace)
    found = list_page(views, lambda v: (v.name,), (str,), page)
    return EndpointList(endpoints=[_url(v, cp) for v in found.items], next_cursor=found.next_cursor)


@router.get("/{name}")
def get_endpoint(name: str, workspace: ReadableWorkspace, cp: CP) -> EndpointView:
    with cp.store.read() as session:
        view = service.endpoint_view(session, service.get(session, workspace, name), workspace.name)
    return _url(view, cp)


@router.put("/{name}")
def update_endpoint(
    name: str, spec: EndpointSpec, workspace: WritableWorkspace, cp: CP
) -> EndpointView:
    """Roll out a new spec; ready capacity stays at or above min_replicas meanwhile."""

    def update() -> EndpointView:
        with cp.store.transaction() as session:
            endpoint = service.update(
                session, service.get(session, workspace, name), spec, cp.clock.now()
            )
            session.flush()
            return service.endpoint_view(session, endpoint, workspace.name)

    view = retry_stale(update)
    with cp.store.read() as session:
        warnings = resource_warnings(session, spec.resources)
    if warnings:
        view = view.model_copy(update={"warnings": warnings})
    cp.wake_endpoints()
    cp.poke_routes()
    return _url(view, cp)


@router.delete("/{name}", status_code=202)
def delete_endpoint(name: str, workspace: WritableWorkspace, cp: CP) -> EndpointView:
    """Drain and stop its replicas, then forget it."""

    def delete() -> EndpointView:
        with cp.store.transaction() as session:
            endpoint = service.get(session, workspace, name)
            service.delete(endpoint, cp.clock.now())
            session.flush()
            return service.endpoint_view(session, endpoint, workspace.name)

    view = retry_stale(delete)
    cp.wake_endpoints()
    cp.poke_routes()
    return _url(view, cp)


@gateway_router.get("/routes")
async def routes(
    request: Request,
    caller: Caller,
    cp: CP,
    after: int | None = Query(default=None, description="the version the gateway has"),
    wait: float = Query(default=0.0, ge=0, le=60, description="seconds to hold for a change"),
) -> RouteTable:
    """The whole route table; with `after`, held until it differs from that version."""
    service.check_gateway_caller(caller)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        seen = cp.routes.generation
        table = await asyncio.to_thread(_table, cp)
        remaining = deadline - loop.time()
        if after is None or table.version != after or remaining <= 0:
            return table
        if cp.stopping.is_set() or await request.is_disconnected():
            return table  # the server is stopping, or the gateway hung up: stop holding
        await cp.routes.wait(seen, min(remaining, 1.0))


def _table(cp: ControlPlane) -> RouteTable:
    with cp.store.read() as session:
        table = service.route_table(session, 0, cp.options.gateway_domain)
    content = table.model_dump_json(exclude={"version"}).encode()
    return table.model_copy(update={"version": cp.routes.observe(content)})


@gateway_router.post("/wake", status_code=202)
def wake(body: Wake, caller: Caller, cp: CP) -> dict[str, bool]:
    """A request is held for an endpoint with no ready replica: scale it up now."""
    service.check_gateway_caller(caller)
    cp.held[(body.workspace, body.endpoint)] = body.held
    cp.wake_endpoints()
    return {"ok": True}


@gateway_router.post("/load", status_code=202)
def load(body: GatewayLoad, caller: Caller, cp: CP) -> dict[str, bool]:
    """A gateway's load report (each second): what the autoscaler scales on, and the
    endpoint page charts (its history reads the desired replicas at most once a second)."""
    service.check_gateway_caller(caller)
    cp.loads.report(body, cp.clock.now(), desired=lambda: desired_replicas(cp.store))
    return {"ok": True}
