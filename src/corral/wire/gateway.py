"""Between the control plane and the gateway: the route table, load signals, wake-ups.

    control plane ── GET /v1/gateway/routes[?after=V&wait=S] ──► gateway   (RouteTable)
    control plane ◄── POST /v1/gateway/wake ─────────────────── gateway   (Wake, at once)
    control plane ◄── POST /v1/gateway/load ─────────────────── gateway   (GatewayLoad, 1/s)
    (also GET /_corral/load on the gateway, with the control-plane or metrics token)

The route table is the whole desired routing state, versioned: the gateway replaces its
table with each one it receives, so a lost or repeated response does no harm.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A route's reason is short: it goes into 503 bodies, and into every route table. Cut at
# the source and again where shown (not validated: one long reason must not cost a gateway
# the whole table).
REASON_MAX = 200

ReplicaRouteState = Literal["starting", "ready", "draining"]
AuthMode = Literal["public", "workspace", "endpoint"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReplicaRoute(_Wire):
    id: str = Field(description="stable for the replica's life; the gateway keys its state on it")
    url: str = Field(description="base URL of the replica's HTTP server, e.g. http://10.0.0.5:8000")
    state: ReplicaRouteState = Field(
        description="starting: not yet ready, gets no traffic; ready: takes new requests; "
        "draining: finishes what it has, takes nothing new"
    )


class EndpointRoute(_Wire):
    name: str
    workspace: str
    auth: AuthMode = "public"
    token_sha256: list[str] = Field(
        default_factory=list,
        description="hex SHA-256 of each bearer token accepted (workspace or endpoint mode)",
    )
    replicas: list[ReplicaRoute] = Field(default_factory=list)
    max_held: int = Field(default=100, ge=0, description="requests held while none is ready")
    hold_timeout_s: float = Field(default=300.0, gt=0, description="how long one is held")
    drain_timeout_s: float = Field(
        default=300.0, ge=0, description="how long a draining replica keeps its open requests"
    )
    max_inflight_per_replica: int = Field(
        default=0, ge=0, description="affinity gives way above this many in flight; 0: no cap"
    )
    affinity_header: str | None = Field(
        default=None, description="requests with the same value of this header prefer one replica"
    )
    reason: str | None = Field(
        default=None,
        description="why no replica serves (capacity or readiness only: a 503 shows it to "
        "whoever calls the endpoint); null while one does",
    )


class RouteTable(_Wire):
    version: int = Field(description="grows with every change; echo it as ?after= to long-poll")
    domain: str | None = Field(default=None, description="Host NAME.<domain> routes to NAME")
    endpoints: list[EndpointRoute] = Field(default_factory=list)


class Wake(_Wire):
    """Sent when a request arrives for an endpoint with no ready replica."""

    endpoint: str
    workspace: str
    held: int = Field(description="requests now waiting for a replica")


class ReplicaLoad(_Wire):
    id: str
    state: str = Field(description="starting | ready | draining | gone (left the route table)")
    in_flight: int = Field(description="requests open on it through this gateway")


class EndpointLoad(_Wire):
    name: str
    workspace: str
    in_flight: int = Field(description="requests being served or held, now")
    held: int = Field(description="of which held, waiting for a ready replica")
    arrivals: int = Field(description="requests received since the gateway started (a counter)")
    completed: int = Field(description="requests answered since the gateway started (a counter)")
    rejected: int = Field(description="503s for want of a replica (a counter)")
    mean_in_flight: float = Field(
        description="time-averaged in-flight over the last window (what the autoscaler wants)"
    )
    window_s: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    last_arrival_age_s: float | None = Field(
        default=None, description="seconds since the last request arrived; null if none yet"
    )
    replicas: list[ReplicaLoad] = Field(
        default_factory=list,
        description="a draining replica may be stopped once every gateway shows it at 0",
    )


class GatewayLoad(_Wire):
    gateway: str = Field(description="this gateway's id (several may serve one control plane)")
    route_version: int
    endpoints: list[EndpointLoad]
