"""The endpoint page: its replicas and rollout, its load over time as charts (from the
gateways' bounded history, server/load_history.py), and how to call it.

    GET /ui/endpoints/{workspace}/{name}            the page
    GET /ui/endpoints/{workspace}/{name}/replicas   the status fragment it polls (htmx)
    GET /ui/endpoints/{workspace}/{name}/series     the charts' JSON (?chart=requests|...)

Each checks the workspace first (viewer): another workspace's token learns nothing, not
even whether the endpoint exists.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from corral.server.api.deps import CP
from corral.server.auth import check_workspace_access
from corral.server.errors import Invalid, NotFound
from corral.server.load_history import CAPACITY, STEP_S
from corral.server.services import endpoints as service
from corral.server.services.identity import workspace_by_name
from corral.web.render import SECURITY_HEADERS, html
from corral.web.session import PREFIX, Viewer
from corral.web.views import endpoint as views
from corral.wire.api import EndpointView

router = APIRouter(prefix=PREFIX, include_in_schema=False)

WINDOW_S = CAPACITY * STEP_S  # the charts show what the history keeps: 15 minutes


def _read(cp: CP, who: Viewer, workspace: str, name: str) -> EndpointView:
    """The endpoint as the API shows it to the same token (same service, same checks)."""
    check_workspace_access(who.principal, workspace, "viewer")
    with cp.store.read() as session:
        row = workspace_by_name(session, workspace)
        if row is None:
            raise NotFound.of(f"workspace '{workspace}'")
        return service.endpoint_view(session, service.get(session, row, name), row.name)


def _page(cp: CP, who: Viewer, workspace: str, name: str) -> views.EndpointPage:
    view = _read(cp, who, workspace, name)
    now = cp.clock.now()
    samples = cp.loads.samples(view.workspace, view.name, now - WINDOW_S)
    return views.endpoint_page(view, cp.options.gateway_public_url, samples, now)


@router.get("/endpoints/{workspace}/{name}")
def endpoint_page(request: Request, workspace: str, name: str, who: Viewer, cp: CP) -> HTMLResponse:
    started = time.perf_counter()
    page = _page(cp, who, workspace, name)
    context = {"ep": page, "charts": views.CHART_TITLES}
    return html(request, "endpoint.html", context, visitor=who, started=started)


@router.get("/endpoints/{workspace}/{name}/replicas")
def endpoint_replicas(
    request: Request, workspace: str, name: str, who: Viewer, cp: CP
) -> HTMLResponse:
    started = time.perf_counter()
    page = _page(cp, who, workspace, name)
    return html(request, "_endpoint_status.html", {"ep": page}, visitor=who, started=started)


@router.get("/endpoints/{workspace}/{name}/series")
def endpoint_series(
    workspace: str, name: str, who: Viewer, cp: CP, chart: str | None = None
) -> JSONResponse:
    """The charts' data: one chart's series (`chart`), or all of them."""
    if chart is not None and chart not in views.CHARTS:
        message = f"chart '{chart}' is not one of {', '.join(views.CHARTS)}"
        raise Invalid(message, [{"path": "chart", "message": message}])
    view = _read(cp, who, workspace, name)
    samples = cp.loads.samples(view.workspace, view.name, cp.clock.now() - WINDOW_S)
    return JSONResponse(views.chart_series(samples, chart), headers=SECURITY_HEADERS)
