"""/metrics: the fleet in Prometheus' text format, for a cluster admin or a metrics token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from corral.server.api.deps import control_plane, token_principal
from corral.server.auth import Forbidden, Principal
from corral.server.metrics import registry_for

router = APIRouter(tags=["metrics"])


async def metrics_reader(request: Request) -> Principal:
    """A cluster admin, or a token of the metrics role; any other a 403."""
    found = await token_principal(request, control_plane(request))
    if not found.reads_metrics:
        scope = f"workspace '{found.workspace}'" if found.workspace else "the cluster"
        raise Forbidden(
            "/metrics needs the admin role (cluster-wide) or the metrics role "
            f"(`corral token create --role metrics`); this token is {found.role} of {scope}"
        )
    return found


def _registry(request: Request) -> CollectorRegistry:
    # One per app, made at the first scrape (the control plane exists from start-up on).
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = registry_for(control_plane(request))
    return registry


@router.get("/metrics", response_class=Response)
def metrics(request: Request, _: Annotated[Principal, Depends(metrics_reader)]) -> Response:
    """Prometheus text exposition; the store is read in this worker thread, one session."""
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
