"""One HTTP/1.1 connection from the gateway to a replica; kept alive and pooled per replica."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

import httptools

from corral.gateway.corked import CorkedWriter

if TYPE_CHECKING:
    from corral.gateway.exchange import Context, Exchange
    from corral.gateway.table import Replica

# Reuse an idle connection only while it is younger than this: servers close idle
# keep-alive connections after a few seconds (uvicorn, hence vLLM, after 5 s), and a
# request written into a connection the server is closing would be lost, not retried.
MAX_IDLE_REUSE_S = 2.0


class UpstreamConnection(CorkedWriter, asyncio.Protocol):
    __slots__ = (
        "closed",
        "ctx",
        "exchange",
        "headers",
        "idle_since",
        "parser",
        "pending",
        "replica",
        "transport",
    )

    def __init__(self, replica: Replica, ctx: Context) -> None:
        self.replica = replica
        self.ctx = ctx
        self.pending: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # nothing asked for: the connection is no longer in sync
            self.close()
            return
        ctx = self.ctx
        ctx.corked = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()
        finally:
            ctx.uncork()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        with contextlib.suppress(ValueError):
            self.replica.idle.remove(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code(), self.headers)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_complete()

    def reusable(self, now: float) -> bool:
        return not self.closed and now - self.idle_since < MAX_IDLE_REUSE_S

    def close(self) -> None:
        self.exchange = None
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        """Close with a reset, so the replica sees at once that nobody is listening."""
        self.pending = []
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


def take_idle(replica: Replica, now: float) -> UpstreamConnection | None:
    """A pooled connection to reuse, dropping the ones too old to trust."""
    idle = replica.idle
    while idle:
        conn = idle.pop()  # the most recently used is the least likely to be closing
        if conn.reusable(now):
            return conn
        conn.close()
    return None
