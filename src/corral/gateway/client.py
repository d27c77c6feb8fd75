"""One client connection to the gateway: parses requests and queues their exchanges."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NoReturn, cast

import httptools

from corral.gateway import http1, limits
from corral.gateway.corked import CorkedWriter
from corral.gateway.exchange import Context, Exchange
from corral.gateway.forwarding import edge_headers, is_trusted
from corral.gateway.limits import HeadRefused


class ClientConnection(CorkedWriter, asyncio.Protocol):
    __slots__ = (
        "chunked",
        "closed",
        "ctx",
        "expect",
        "forwarded",
        "head_bytes",
        "head_open",
        "head_started",
        "headers",
        "heads_done",
        "last_active",
        "once",
        "parser",
        "parsing",
        "paused",
        "peer",
        "pending",
        "proxied",
        "queue",
        "refusal",
        "registry",
        "transport",
        "url",
        "write_paused",
    )

    def __init__(self, ctx: Context, registry: set[ClientConnection]) -> None:
        self.ctx = ctx
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.closed = False
        self.paused = False
        self.write_paused = False
        self.peer = b"unknown"
        self.forwarded = b""
        self.proxied = False
        self.last_active = 0.0
        self.pending: list[bytes] = []
        # The request head being read: whether one is open, its bytes so far and since
        # when; heads_done tells a slice fed past the size bound whether the head ended.
        self.head_open = True
        self.head_bytes = 0
        self.head_started: float | None = None
        self.heads_done = 0
        self.once: set[bytes] = set()
        self.chunked = False
        self.expect = False
        self.refusal: HeadRefused | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode()
        self.proxied = is_trusted(self.peer, self.ctx.trusted_proxies)
        self.forwarded = edge_headers(self.peer)
        # A connection that never completes its first head is cut like a slow one.
        self.last_active = self.head_started = self.ctx.clock()
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        ctx = self.ctx
        now = self.last_active = ctx.clock()
        if self.head_open:
            if self.head_started is None:
                self.head_started = now
            self.head_bytes += len(data)
            if self.head_bytes > ctx.limits.max_bytes:
                self._feed_past_bound(data)
                return
        ctx.corked = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # httptools says so only after the upgrade request itself was queued.
            if self.queue:
                self.queue.pop().client_gone()
            self._refuse(501, "not_implemented", "protocol upgrades are not proxied")
        except httptools.HttpParserError:
            refusal = self.refusal
            if refusal is not None:
                self._refuse(refusal.status, refusal.code, refusal.message)
            else:
                self._refuse(400, "bad_request", "malformed HTTP request")
        finally:
            ctx.uncork()

    def _feed_past_bound(self, data: bytes) -> None:
        """Feed only what fits under the bound; refuse if the head has not ended by then."""
        room = len(data) - (self.head_bytes - self.ctx.limits.max_bytes)
        done = self.heads_done
        self.head_bytes -= len(data)
        self.data_received(data[:room])
        if self.closed or self.refusal is not None or self.transport is None:
            return
        if self.transport.is_closing():
            return
        if self.heads_done == done:
            refusal = limits.head_too_large(self.ctx.limits)
            self._refuse(refusal.status, refusal.code, refusal.message)
            return
        self.data_received(data[room:])

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.head_open = False  # read no more: the connection is ending
        self.pending = []
        transport = self.transport
        if transport is None or self.closed:
            return
        if self.queue:
            # Earlier requests' answers are still due on this connection: a refusal now
            # would land inside them, so the connection is cut instead.
            transport.abort()
            return
        transport.write(http1.error_response(status, code, message, close=True))
        transport.close()

    def _stop(self, refusal: HeadRefused) -> NoReturn:
        """From a parser callback: httptools wraps what is raised, so keep it here."""
        self.refusal = refusal
        raise refusal

    def cut_if_slow(self, now: float) -> None:
        started = self.head_started
        if started is not None and self.head_open and now - started > self.ctx.limits.timeout_s:
            refusal = limits.head_too_slow(self.ctx.limits)
            self._refuse(refusal.status, refusal.code, refusal.message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.discard(self)
        queue, self.queue = self.queue, deque()
        for exchange in queue:
            exchange.client_gone()

    def pause_writing(self) -> None:
        # The client reads slower than the replica writes: slow the replica down.
        self.write_paused = True
        if self.queue:
            upstream = self.queue[0].upstream
            if upstream is not None and upstream.transport is not None:
                upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            upstream = self.queue[0].upstream
            if upstream is not None and upstream.transport is not None:
                upstream.transport.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.once = set()
        self.chunked = self.expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if len(headers) >= self.ctx.limits.max_count:
            self._stop(limits.too_many_headers(self.ctx.limits))
        name = name.lower()
        if name in limits.SINGLE:
            self._check_single(name, value)
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"
        headers.append((name, value))

    def _check_single(self, name: bytes, value: bytes) -> None:
        if name in self.once:
            self._stop(limits.repeated(name))
        self.once.add(name)
        if name == b"transfer-encoding":
            try:
                limits.check_transfer_encoding(value)
            except HeadRefused as refusal:
                self._stop(refusal)
            self.chunked = True

    def on_headers_complete(self) -> None:
        self.head_open = False
        self.head_started = None
        self.heads_done += 1
        parser = self.parser
        exchange = Exchange(
            self.ctx,
            self,
            parser.get_method(),
            self.url,
            self.headers,
            parser.get_http_version() == "1.1",
            parser.should_keep_alive(),
            self.chunked,
        )
        self.parsing = exchange
        self.queue.append(exchange)
        if self.expect:
            self.write(http1.CONTINUE)
        if len(self.queue) == 1:
            exchange.start()

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        self.head_open = True
        self.head_bytes = 0
        if self.parsing is not None:
            self.parsing.request_done()
            self.parsing = None

    # called by exchanges
    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.pending = []
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def exchange_done(self, exchange: Exchange) -> None:
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        if not exchange.keep_alive:
            self.flush()
            if self.transport is not None and not self.closed:
                self.transport.close()
            return
        self.last_active = self.ctx.clock()
        if self.queue:
            self.queue[0].start()

    def close_if_idle(self, now: float, idle_s: float) -> None:
        if not self.queue and now - self.last_active > idle_s and self.transport is not None:
            self.transport.close()
