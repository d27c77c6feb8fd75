"""One request through the gateway: route → pick or hold → connect → stream back.

The common case — a ready replica with a pooled connection — runs synchronously inside
the client's `data_received`, with no task per request; connecting and holding are the
slow paths and get a task. Bytes move as they arrive in both directions: nothing is
buffered beyond what one socket read returned, except a request body that arrives while
no replica has been chosen yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from corral.gateway import http1
from corral.gateway.forwarding import Network, proxied_headers
from corral.gateway.limits import HeadLimits
from corral.gateway.signals import Metrics
from corral.gateway.table import EndpointRuntime, Replica, RoutingTable, Waiter
from corral.gateway.upstream import UpstreamConnection, take_idle
from corral.timeouts import within
from corral.wire.gateway import REASON_MAX

if TYPE_CHECKING:
    from corral.gateway.client import ClientConnection

log = logging.getLogger("corral.gateway")

# Above this much request body buffered before a replica is attached, stop reading.
MAX_EARLY_BODY = 1 << 20


class Writer(Protocol):
    pending: list[bytes]

    def flush(self) -> None: ...


@dataclass
class Context:
    """What every exchange of one gateway shares."""

    table: RoutingTable
    metrics: Metrics
    clock: Callable[[], float]
    wake: Callable[[EndpointRuntime], None]
    # (method, target, Authorization header or None) → the whole response
    admin: Callable[[bytes, bytes, bytes | None], bytes]
    retry_after_s: int = 1
    connect_timeout_s: float = 5.0
    limits: HeadLimits = field(default_factory=HeadLimits)
    trusted_proxies: tuple[Network, ...] = ()
    # While one socket read is being handled, writes are gathered per connection and sent
    # as one send() at its end: a response's head and body, or a request's head and body,
    # mostly arrive in one read. Nothing waits longer than that callback.
    corked: bool = False
    dirty: list[Writer] = field(default_factory=list)

    def uncork(self) -> None:
        self.corked = False
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for writer in dirty:
                writer.flush()


class Exchange:
    __slots__ = (
        "body",
        "body_size",
        "client",
        "ctx",
        "endpoint",
        "finished",
        "headers",
        "keep_alive",
        "method",
        "path",
        "replica",
        "request_chunked",
        "request_complete",
        "response_chunked",
        "response_started",
        "response_until_eof",
        "retried",
        "started_at",
        "status",
        "task",
        "upstream",
        "version11",
    )

    def __init__(
        self,
        ctx: Context,
        client: ClientConnection,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        version11: bool,
        keep_alive: bool,
        request_chunked: bool,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.method = method
        self.path = path
        self.headers = headers
        self.version11 = version11
        self.keep_alive = keep_alive
        self.request_chunked = request_chunked
        self.request_complete = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.endpoint: EndpointRuntime | None = None
        self.replica: Replica | None = None
        self.upstream: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.retried = False
        self.response_started = False
        self.response_chunked = False
        self.response_until_eof = False
        self.finished = False
        self.started_at = 0.0
        self.status = 0

    # ---- the request side -------------------------------------------------------------
    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        upstream = self.upstream
        if upstream is not None:
            self._send_body(upstream, data)
            return
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > MAX_EARLY_BODY:
            self.client.pause_reading()

    def request_done(self) -> None:
        self.request_complete = True
        if self.upstream is not None and self.request_chunked and not self.finished:
            self.upstream.write(http1.LAST_CHUNK)

    def _send_body(self, upstream: UpstreamConnection, data: bytes) -> None:
        if self.request_chunked:
            upstream.write(http1.chunk_size(len(data)) + data + b"\r\n")
        else:
            upstream.write(data)

    def start(self) -> None:
        """Called when this exchange is at the head of its connection's queue."""
        ctx = self.ctx
        now = self.started_at = ctx.clock()
        name, target, host_routed = self._route()
        if name is None:
            if not host_routed and self.path.startswith(b"/_corral/"):
                self._reply(ctx.admin(self.method, self.path, self._header(b"authorization")))
            else:
                self._reply(http1.error_response(404, "not_found", "no such endpoint"))
            return
        endpoint = ctx.table.endpoints.get(name)
        if endpoint is None:
            self._reply(http1.error_response(404, "not_found", f"endpoint '{name}' does not exist"))
            return
        if endpoint.route.auth != "public" and not endpoint.authorised(
            self._header(b"authorization")
        ):
            message = f"endpoint '{name}' needs a valid bearer token"
            self._reply(http1.error_response(401, "unauthorized", message))
            return
        self.path = target
        self.endpoint = endpoint
        endpoint.load.arrive(now)
        endpoint.series.in_flight.inc()
        replica = endpoint.choose(now, self._affinity_key())
        if replica is None or not endpoint.ready:
            ctx.wake(endpoint)  # no ready replica: the autoscaler hears of it at once
        if replica is None:
            self._spawn(self._hold_then_send())
        else:
            self._send_to(replica)

    def _route(self) -> tuple[str | None, bytes, bool]:
        """(endpoint name, path to forward, whether the Host header chose it)."""
        domain = self.ctx.table.domain
        if domain is not None:
            host = (self._header(b"host") or b"").lower().split(b":", 1)[0]
            if host.endswith(b"." + domain):
                label = host[: -len(domain) - 1]
                if label and b"." not in label:
                    return label.decode("ascii", "replace"), self.path, True
        path = self.path
        if path.startswith(b"/ep/"):
            rest = path[4:]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
            name, target = (rest, b"/") if cut < 0 else (rest[:cut], rest[cut:])
            if target.startswith(b"?"):
                target = b"/" + target
            if name:
                return name.decode("ascii", "replace"), target, False
        return None, path, False

    def _header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def _affinity_key(self) -> bytes | None:
        header = self.endpoint.affinity_header if self.endpoint else None
        return self._header(header) if header else None

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        self.task = asyncio.ensure_future(coro)

    def _send_to(self, replica: Replica) -> None:
        self.replica = replica
        replica.in_flight += 1
        conn = take_idle(replica, self.ctx.clock())
        if conn is not None:
            self._attach(conn)
        else:
            self._spawn(self._connect(replica))

    async def _connect(self, replica: Replica) -> None:
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        try:
            _, conn = await within(
                loop.create_connection(
                    lambda: UpstreamConnection(replica, ctx), replica.host, replica.port
                ),
                ctx.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            replica.in_flight -= 1
            self.replica = None
            endpoint = self.endpoint
            assert endpoint is not None
            endpoint.mark_suspect(replica, ctx.clock())
            log.info("replica %s of %s unreachable: %s", replica.id, endpoint.name, exc)
            if self.retried:
                self._fail_before_response(502, "bad_gateway", "the replica could not be reached")
                return
            # Nothing reached the replica, so the request can go elsewhere, once.
            self.retried = True
            endpoint.series.retries.inc()
            other = endpoint.choose(ctx.clock(), self._affinity_key(), exclude=replica)
            if other is not None:
                self._send_to(other)
            else:
                ctx.wake(endpoint)
                await self._hold_then_send()
            return
        if self.finished:  # the client left while we connected
            conn.close()
            return
        self._attach(conn)

    async def _hold_then_send(self) -> None:
        ctx = self.ctx
        endpoint = self.endpoint
        assert endpoint is not None
        route = endpoint.route
        deadline = self.started_at + route.hold_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            if len(endpoint.waiters) >= route.max_held:
                message = f"endpoint '{endpoint.name}' has too many held requests"
                self._reject(endpoint, because(message, endpoint.route.reason))
                return
            waiter = Waiter(loop.create_future(), ctx.clock())
            endpoint.waiters.append(waiter)
            endpoint.load.held += 1
            endpoint.series.held.inc()
            try:
                remaining = deadline - ctx.clock()
                if remaining > 0:
                    await within(waiter.future, remaining)
            except TimeoutError:
                pass
            finally:
                endpoint.load.held -= 1
                endpoint.series.held.dec()
                with contextlib.suppress(ValueError):
                    endpoint.waiters.remove(waiter)
            if ctx.table.endpoints.get(endpoint.name) is not endpoint:
                self._fail_before_response(404, "not_found", "the endpoint was deleted")
                return
            replica = endpoint.choose(ctx.clock(), self._affinity_key())
            if replica is not None:
                self._send_to(replica)
                return
            if ctx.clock() >= deadline:
                message = (
                    f"no replica of '{endpoint.name}' became ready within "
                    f"{route.hold_timeout_s:g} s"
                )
                self._reject(endpoint, because(message, endpoint.route.reason))
                return

    def _attach(self, conn: UpstreamConnection) -> None:
        replica = self.replica
        assert replica is not None
        self.upstream = conn
        conn.exchange = self
        replica.active.add(conn)
        conn.write(self._request_head(replica))
        if self.body:
            for piece in self.body:
                self._send_body(conn, piece)
            self.body = []
            self.client.resume_reading()
        if self.request_complete and self.request_chunked:
            conn.write(http1.LAST_CHUNK)
        if self.client.write_paused and conn.transport is not None:
            conn.transport.pause_reading()

    def _request_head(self, replica: Replica) -> bytes:
        endpoint = self.endpoint
        assert endpoint is not None
        strip_auth = endpoint.route.auth != "public"
        parts = [self.method, b" ", self.path, b" HTTP/1.1\r\nhost: ", replica.hostport, b"\r\n"]
        original_host = b""
        for key, value in self.headers:
            if key in http1.NOT_FORWARDED:
                continue
            if key == b"host":
                original_host = value
                continue
            if strip_auth and key == b"authorization":
                continue  # corral's own credential is not the model server's business
            parts += (key, b": ", value, b"\r\n")
        if self.request_chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        client = self.client
        if client.proxied:
            parts.append(proxied_headers(self.headers, client.peer))
        else:
            parts.append(client.forwarded)
        if original_host and not (client.proxied and self._header(b"x-forwarded-host")):
            parts += (b"x-forwarded-host: ", original_host, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    # ---- the response side ------------------------------------------------------------
    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.finished or status < 200:
            return  # 1xx: the final response follows on the same connection
        upstream_chunked = False
        has_length = False
        out = [http1.status_line(status)]
        for key, value in headers:
            if key == b"transfer-encoding":
                upstream_chunked = b"chunked" in value.lower()
                continue
            if key in http1.HOP_BY_HOP:
                continue
            if key == b"content-length":
                has_length = True
            out += (key, b": ", value, b"\r\n")
        replica = self.replica
        assert replica is not None
        out += (b"x-corral-replica: ", replica.id.encode(), b"\r\n")
        if not http1.no_body(status, self.method) and not has_length:
            self.response_until_eof = not upstream_chunked
            if self.version11:
                self.response_chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        self.response_started = True
        self.status = status
        self.client.write(b"".join(out))
        endpoint = self.endpoint
        assert endpoint is not None
        elapsed = self.ctx.clock() - self.started_at
        endpoint.load.first_byte_s.append(elapsed)
        endpoint.series.first_byte.observe(elapsed)
        if self.method == b"HEAD":
            # httptools cannot be told a HEAD response has no body; drop the connection.
            self._finish(status, reuse=False)

    def response_body(self, data: bytes) -> None:
        if self.finished:
            return
        if self.response_chunked:
            self.client.writelines((http1.chunk_size(len(data)), data, b"\r\n"))
        else:
            self.client.write(data)

    def response_complete(self) -> None:
        if self.finished or not self.response_started:
            return
        if self.response_chunked:
            self.client.write(http1.LAST_CHUNK)
        upstream = self.upstream
        # A connection whose request body was not all sent (the replica answered early)
        # is out of step with the protocol: it cannot carry another request.
        reuse = upstream is not None and self.request_complete and not self.response_until_eof
        if reuse and upstream is not None:
            reuse = _keeps_alive(upstream.headers)
        self._finish(self.status, reuse=reuse)

    def upstream_lost(self) -> None:
        """The replica's connection closed before the response was complete."""
        if self.finished:
            return
        self.upstream = None
        if self.response_started and self.response_until_eof:
            self.response_complete_eof()
        elif self.response_started:
            # Bytes already went to the client: it must see a broken response, not a short one.
            self.client.abort()
            self._finish(502, reuse=False)
        else:
            self._fail_before_response(502, "bad_gateway", "the replica closed the connection")

    def response_complete_eof(self) -> None:
        if self.response_chunked:
            self.client.write(http1.LAST_CHUNK)
        self._finish(self.status, reuse=False)

    # ---- endings ----------------------------------------------------------------------
    def _reply(self, response: bytes) -> None:
        """Answer from the gateway itself (no replica involved)."""
        self.finished = True
        self.client.write(response)
        self.client.exchange_done(self)

    def _reject(self, endpoint: EndpointRuntime, message: str) -> None:
        endpoint.load.rejected += 1
        endpoint.series.rejected.inc()
        self._fail_before_response(503, "unavailable", message, retry_after=self.ctx.retry_after_s)

    def _fail_before_response(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        if self.finished:
            return
        self.client.write(http1.error_response(status, code, message, retry_after=retry_after))
        self._finish(status, reuse=False)

    def client_gone(self) -> None:
        """The client disconnected: stop the replica's work too."""
        if self.finished:
            return
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.upstream is not None:
            self.upstream.abort()
        self._finish(499, reuse=False, notify_client=False)

    def abort_for_drain(self) -> None:
        """The replica's drain timeout passed with this request still open."""
        if self.upstream is not None:
            self.upstream.abort()  # upstream_lost follows and ends the exchange

    def _finish(self, status: int, *, reuse: bool, notify_client: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        now = ctx.clock()
        replica, upstream = self.replica, self.upstream
        if replica is not None:
            replica.in_flight -= 1
            if upstream is not None:
                replica.active.discard(upstream)
                upstream.exchange = None
                if reuse and replica.state == "ready":
                    upstream.idle_since = now
                    replica.idle.append(upstream)
                else:
                    upstream.close()
        endpoint = self.endpoint
        if endpoint is not None:
            endpoint.load.finish(now)
            series = endpoint.series
            series.in_flight.dec()
            series.duration.observe(now - self.started_at)
            series.answered(status)
        if notify_client:
            self.client.exchange_done(self)


def because(message: str, reason: str | None) -> str:
    """A 503's message with the control plane's word on why no replica serves (capacity or
    readiness only: the route table carries nothing else for callers to read)."""
    if not reason:
        return message
    return f"{message}: {reason[:REASON_MAX]}"


def _keeps_alive(headers: list[tuple[bytes, bytes]]) -> bool:
    return all(not (key == b"connection" and b"close" in value.lower()) for key, value in headers)
