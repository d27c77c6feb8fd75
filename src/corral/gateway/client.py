"""One client connection to the gateway: parses requests and queues their exchanges."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

from corral.gateway import http1
from corral.gateway.corked import CorkedWriter
from corral.gateway.exchange import Context, Exchange


class ClientConnection(CorkedWriter, asyncio.Protocol):
    __slots__ = (
        "closed",
        "ctx",
        "headers",
        "last_active",
        "parser",
        "parsing",
        "paused",
        "peer",
        "pending",
        "queue",
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
        self.last_active = 0.0
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode()
        self.last_active = self.ctx.clock()
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        ctx = self.ctx
        self.last_active = ctx.clock()
        ctx.corked = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, "not_implemented", "protocol upgrades are not proxied")
        except httptools.HttpParserError:
            self._refuse(400, "bad_request", "malformed HTTP request")
        finally:
            ctx.uncork()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.write(http1.error_response(status, code, message, close=True))
        self.flush()
        if self.transport is not None:
            self.transport.close()

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

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version11 = parser.get_http_version() == "1.1"
        chunked = False
        expect = False
        for key, value in self.headers:
            if key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"expect":
                expect = value.lower() == b"100-continue"
        exchange = Exchange(
            self.ctx,
            self,
            parser.get_method(),
            self.url,
            self.headers,
            version11,
            parser.should_keep_alive(),
            chunked,
        )
        self.parsing = exchange
        self.queue.append(exchange)
        if expect:
            self.write(http1.CONTINUE)
        if len(self.queue) == 1:
            exchange.start()

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
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
