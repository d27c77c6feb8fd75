"""The gateway's live view of endpoints and replicas, built from route tables.

A route table is desired state; this module turns each new one into changes of live
state without dropping anything in flight: a replica that turns `draining` or leaves the
table keeps its open requests (streams included) until they end or its drain timeout
passes; a replica that turns `ready` releases the requests held for its endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from corral.gateway import balance
from corral.gateway.signals import EndpointSeries, LoadTracker, Metrics
from corral.wire.gateway import EndpointRoute, ReplicaRoute, RouteTable

if TYPE_CHECKING:
    from corral.gateway.upstream import UpstreamConnection

# After a failed connect a replica is skipped this long (or until the next route table).
SUSPECT_S = 2.0


class Replica:
    __slots__ = (
        "active",
        "drain_deadline",
        "host",
        "hostport",
        "id",
        "idle",
        "in_flight",
        "port",
        "state",
        "suspect_until",
        "url",
    )

    def __init__(self, route: ReplicaRoute) -> None:
        self.id = route.id
        self.url = route.url
        parts = urlsplit(route.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"replica {route.id}: url {route.url!r} must be http://HOST:PORT")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.hostport = f"{self.host}:{self.port}".encode()
        self.state: str = route.state
        self.in_flight = 0
        self.idle: deque[UpstreamConnection] = deque()
        self.active: set[UpstreamConnection] = set()
        self.drain_deadline: float | None = None
        self.suspect_until = 0.0

    @property
    def gone(self) -> bool:
        return self.state == "gone"

    def start_draining(self, now: float, timeout_s: float) -> None:
        if self.drain_deadline is None:
            self.drain_deadline = now + timeout_s
        # Idle connections will carry nothing more; open ones close when their response ends.
        while self.idle:
            self.idle.pop().close()

    def takes_traffic(self, now: float) -> bool:
        return self.state == "ready" and self.suspect_until <= now


@dataclass
class Waiter:
    future: asyncio.Future[None]
    since: float


@dataclass
class EndpointRuntime:
    route: EndpointRoute
    load: LoadTracker
    series: EndpointSeries
    replicas: dict[str, Replica] = field(default_factory=dict)
    ready: list[Replica] = field(default_factory=list)
    waiters: deque[Waiter] = field(default_factory=deque)
    tokens: frozenset[str] = frozenset()
    affinity_header: bytes | None = None
    turn: int = 0
    last_wake: float = float("-inf")
    # Set by a wake, cleared when a replica is ready: a new want of replicas wakes at once.
    wake_pending: bool = False

    @property
    def name(self) -> str:
        return self.route.name

    def refresh_ready(self, now: float) -> None:
        self.ready = [r for r in self.replicas.values() if r.takes_traffic(now)]

    def authorised(self, authorization: bytes | None) -> bool:
        if self.route.auth == "public":
            return True
        if not authorization or authorization[:7].lower() != b"bearer ":
            return False
        token = authorization[7:].strip()
        return hashlib.sha256(token).hexdigest() in self.tokens

    def mark_suspect(self, replica: Replica, now: float) -> None:
        replica.suspect_until = now + SUSPECT_S
        self.refresh_ready(now)

    def choose(
        self, now: float, key: bytes | None, exclude: Replica | None = None
    ) -> Replica | None:
        """A replica for a new request: ready ones by policy; else the least busy draining one.

        Falling back to a draining replica is what lets a request that arrives while the
        last replica is being removed still succeed; the caller also wakes the autoscaler.
        """
        ready = self.ready if exclude is None else [r for r in self.ready if r is not exclude]
        self.turn += 1
        chosen = balance.pick(ready, self.turn, key, self.route.max_inflight_per_replica)
        if chosen is not None:
            return chosen
        draining = [
            r
            for r in self.replicas.values()
            if r.state in ("draining", "gone")
            and r is not exclude
            and r.suspect_until <= now
            and (r.drain_deadline is None or r.drain_deadline > now + 1.0)
        ]
        return balance.least_outstanding(draining, self.turn)

    def release_waiters(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)


class RoutingTable:
    """Endpoints by name; `apply` moves it to a new route table."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.version = -1
        self.domain: bytes | None = None
        self.endpoints: dict[str, EndpointRuntime] = {}
        # Removed endpoints whose draining replicas still have requests open.
        self.retired: list[EndpointRuntime] = []

    def apply(self, table: RouteTable) -> None:
        now = self.clock()
        self.version = table.version
        self.domain = table.domain.lower().encode() if table.domain else None
        wanted = {e.name: e for e in table.endpoints}
        for name, runtime in list(self.endpoints.items()):
            if name not in wanted:
                self._retire_endpoint(runtime, now)
        for name, route in wanted.items():
            existing = self.endpoints.get(name)
            if existing is None:
                existing = EndpointRuntime(
                    route=route, load=LoadTracker(now), series=self.metrics.series(name)
                )
                self.endpoints[name] = existing
            self._update_endpoint(existing, route, now)

    def _update_endpoint(self, runtime: EndpointRuntime, route: EndpointRoute, now: float) -> None:
        runtime.route = route
        runtime.tokens = frozenset(route.token_sha256)
        header = route.affinity_header
        runtime.affinity_header = header.lower().encode() if header else None
        seen = set()
        for replica_route in route.replicas:
            seen.add(replica_route.id)
            replica = runtime.replicas.get(replica_route.id)
            if replica is None:
                replica = Replica(replica_route)
                runtime.replicas[replica.id] = replica
            if replica_route.state == "ready" and replica.state != "ready":
                replica.suspect_until = 0.0  # the control plane has just seen it ready
            replica.state = replica_route.state
            if replica.state == "draining":
                replica.start_draining(now, route.drain_timeout_s)
            else:
                replica.drain_deadline = None
        for replica in runtime.replicas.values():
            if replica.id not in seen and not replica.gone:
                replica.state = "gone"
                replica.start_draining(now, route.drain_timeout_s)
        runtime.refresh_ready(now)
        if runtime.ready:
            runtime.wake_pending = False
            runtime.release_waiters()

    def _retire_endpoint(self, runtime: EndpointRuntime, now: float) -> None:
        for replica in runtime.replicas.values():
            replica.state = "gone"
            replica.start_draining(now, runtime.route.drain_timeout_s)
        runtime.ready = []
        runtime.route = runtime.route.model_copy(update={"replicas": []})
        # Held requests cannot be served any more; they are answered 404 when woken.
        for waiter in runtime.waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)
        runtime.waiters.clear()
        del self.endpoints[runtime.name]
        self.retired.append(runtime)

    def expired_replicas(self, now: float) -> list[tuple[EndpointRuntime, Replica]]:
        """Draining replicas past their deadline that still have requests open."""
        out = []
        for runtime in [*self.endpoints.values(), *self.retired]:
            for replica in runtime.replicas.values():
                deadline = replica.drain_deadline
                if deadline is not None and deadline <= now and replica.active:
                    out.append((runtime, replica))
        return out

    def recheck_suspects(self, now: float) -> None:
        for runtime in self.endpoints.values():
            if any(0 < r.suspect_until <= now for r in runtime.replicas.values()):
                for replica in runtime.replicas.values():
                    if replica.suspect_until <= now:
                        replica.suspect_until = 0.0
                runtime.refresh_ready(now)
                if runtime.ready:
                    runtime.release_waiters()

    def collect(self) -> None:
        """Forget gone replicas (and retired endpoints) once nothing of theirs is open."""
        for runtime in self.endpoints.values():
            for rid in [r.id for r in runtime.replicas.values() if r.gone and not r.active]:
                del runtime.replicas[rid]
        self.retired = [e for e in self.retired if any(r.active for r in e.replicas.values())]
