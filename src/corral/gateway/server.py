"""The gateway: a listening socket, the live routing table, and its housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.gateway import http1
from corral.gateway.adminauth import PUBLIC_PATHS, AdminAuth
from corral.gateway.client import ClientConnection
from corral.gateway.exchange import Context
from corral.gateway.forwarding import Network
from corral.gateway.limits import HeadLimits
from corral.gateway.routes import RouteSource
from corral.gateway.signals import Metrics
from corral.gateway.table import EndpointRuntime, RoutingTable
from corral.timeouts import within
from corral.wire.gateway import EndpointLoad, GatewayLoad, ReplicaLoad, RouteTable, Wake

log = logging.getLogger("corral.gateway")

HOUSEKEEPING_S = 0.25
CLIENT_IDLE_S = 75.0  # as nginx's keepalive_timeout
# While requests stay held the control plane is reminded this often.
WAKE_REPEAT_S = 1.0


class Gateway:
    def __init__(
        self,
        source: RouteSource,
        *,
        gateway_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_after_s: int = 1,
        connect_timeout_s: float = 5.0,
        report_s: float = 1.0,
        admin_auth: AdminAuth | None = None,
        limits: HeadLimits | None = None,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        """`admin_auth`: who may read /_corral/load and /_corral/metrics (default: nobody)."""
        self.report_s = report_s
        self.admin_auth = admin_auth or AdminAuth()
        self.source = source
        self.id = gateway_id or socket.gethostname()
        self.clock = clock
        self.metrics = Metrics()
        self.table = RoutingTable(self.metrics, clock)
        self.ctx = Context(
            table=self.table,
            metrics=self.metrics,
            clock=clock,
            wake=self._wake,
            admin=self._admin,
            retry_after_s=retry_after_s,
            connect_timeout_s=connect_timeout_s,
            limits=limits or HeadLimits(),
            trusted_proxies=trusted_proxies,
        )
        self.clients: set[ClientConnection] = set()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._routes_seen = asyncio.Condition()
        self.port = 0

    # ---- lifecycle --------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self.ctx, self.clients), host, port, backlog=2048
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._tasks = [
            asyncio.create_task(self._follow_routes(), name="gateway-routes"),
            asyncio.create_task(self._housekeeping(), name="gateway-housekeeping"),
            asyncio.create_task(self._report_load(), name="gateway-report"),
        ]
        return self.port

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting connections; wait up to `timeout_s` for open requests to end."""
        if self._server is not None:
            self._server.close()
        deadline = self.clock() + timeout_s
        while any(c.queue for c in self.clients) and self.clock() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in list(self.clients):
            client.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await within(self._server.wait_closed(), 2.0)

    async def wait_for_routes(self, version: int, timeout: float = 10.0) -> None:
        """Return once a route table of at least `version` is in force."""
        async with self._routes_seen:
            await within(self._routes_seen.wait_for(lambda: self.table.version >= version), timeout)

    async def _follow_routes(self) -> None:
        async for table in self.source.watch():
            self.apply(table)

    def apply(self, table: RouteTable) -> None:
        self.table.apply(table)
        task = asyncio.ensure_future(self._notify_routes())
        task.add_done_callback(_log_failure)

    async def _notify_routes(self) -> None:
        async with self._routes_seen:
            self._routes_seen.notify_all()

    async def _report_load(self) -> None:
        while True:
            await asyncio.sleep(self.report_s)
            try:
                await self.source.report(self.load(self.report_s))
            except Exception:  # reporting must never stop; the next report covers this one
                log.exception("load report failed")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self._tidy()
            except Exception:  # housekeeping must outlive any one bad pass
                log.exception("gateway housekeeping failed")

    def _tidy(self) -> None:
        now = self.clock()
        for _, replica in self.table.expired_replicas(now):
            for conn in list(replica.active):
                if conn.exchange is not None:
                    conn.exchange.abort_for_drain()
        self.table.recheck_suspects(now)
        self.table.collect()
        for endpoint in self.table.endpoints.values():
            if endpoint.waiters and now - endpoint.last_wake >= WAKE_REPEAT_S:
                self._wake(endpoint)
        for client in list(self.clients):
            client.close_if_idle(now, CLIENT_IDLE_S)
            client.cut_if_slow(now)

    # ---- signals ----------------------------------------------------------------------
    def _wake(self, endpoint: EndpointRuntime) -> None:
        now = self.clock()
        # At once for the first request that finds no ready replica; then at most once a
        # WAKE_REPEAT_S until one is ready (housekeeping repeats it while requests wait).
        if endpoint.wake_pending and now - endpoint.last_wake < WAKE_REPEAT_S:
            return
        endpoint.wake_pending = True
        endpoint.last_wake = now
        wake = Wake(
            endpoint=endpoint.name,
            workspace=endpoint.route.workspace,
            held=max(endpoint.load.held, 1),
        )
        task = asyncio.ensure_future(self.source.wake(wake))
        task.add_done_callback(_log_failure)

    def load(self, window_s: float = 1.0) -> GatewayLoad:
        """What the control plane polls: per-endpoint load over the last `window_s`."""
        now = self.clock()
        window_s = min(max(window_s, 0.1), 60.0)
        endpoints = []
        for endpoint in self.table.endpoints.values():
            load = endpoint.load
            p50, p99 = load.latency_quantile(0.5), load.latency_quantile(0.99)
            endpoints.append(
                EndpointLoad(
                    name=endpoint.name,
                    workspace=endpoint.route.workspace,
                    in_flight=load.in_flight,
                    held=load.held,
                    arrivals=load.arrivals,
                    completed=load.completed,
                    rejected=load.rejected,
                    mean_in_flight=round(load.mean_in_flight(now, window_s), 4),
                    window_s=window_s,
                    latency_p50_ms=None if p50 is None else round(p50 * 1000, 3),
                    latency_p99_ms=None if p99 is None else round(p99 * 1000, 3),
                    last_arrival_age_s=None
                    if load.last_arrival is None
                    else round(now - load.last_arrival, 3),
                    replicas=[
                        ReplicaLoad(id=r.id, state=r.state, in_flight=r.in_flight)
                        for r in endpoint.replicas.values()
                    ],
                )
            )
        return GatewayLoad(gateway=self.id, route_version=self.table.version, endpoints=endpoints)

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)

    def _admin(self, method: bytes, target: bytes, authorization: bytes | None) -> bytes:
        path, _, query = target.partition(b"?")
        if path not in PUBLIC_PATHS and not self.admin_auth.allows(authorization):
            return _UNAUTHORIZED
        if method not in (b"GET", b"HEAD"):
            return http1.error_response(405, "method_not_allowed", "admin paths are read-only")
        if path == b"/_corral/healthz":
            return http1.simple_response(200, b"application/json", b'{"ok":true}')
        if path == b"/_corral/metrics":
            return http1.simple_response(200, CONTENT_TYPE_LATEST.encode(), self.metrics_text())
        if path == b"/_corral/load":
            params = parse_qs(query.decode("ascii", "replace"))
            try:
                window = float(params.get("window", ["1"])[0])
            except ValueError:
                return http1.error_response(400, "invalid", "window must be a number of seconds")
            body = self.load(window).model_dump_json().encode()
            return http1.simple_response(200, b"application/json", body)
        return http1.error_response(404, "not_found", "no such gateway path")


_UNAUTHORIZED = http1.error_response(
    401,
    "unauthorized",
    "the gateway's /_corral/ paths take the control-plane token or the metrics token",
    extra=b"www-authenticate: Bearer\r\n",
)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("gateway task failed: %s", task.exception())
