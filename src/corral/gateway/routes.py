"""Where route tables come from, and where wake-ups go.

`StaticRouteSource` is in-memory (tests, a fixed setup); `HttpRouteSource` long-polls the
control plane's `GET /v1/gateway/routes`, posts `POST /v1/gateway/wake` and, every
second, `POST /v1/gateway/load` (the gateway dials out, like agents: no inbound port).
When the control plane is unreachable the gateway keeps serving its last table.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import httpx

from corral.wire.gateway import GatewayLoad, RouteTable, Wake

log = logging.getLogger("corral.gateway")

WakeHandler = Callable[[Wake], Awaitable[None] | None]


class RouteSource(Protocol):
    def watch(self) -> AsyncIterator[RouteTable]:
        """Route tables as they change, the current one first; runs until cancelled."""
        ...

    async def wake(self, wake: Wake) -> None:
        """Tell whoever scales the endpoint that requests are waiting for a replica."""
        ...

    async def report(self, load: GatewayLoad) -> None:
        """Hand over the load seen over the last reporting period."""
        ...


class StaticRouteSource:
    """A route table held in memory; `set` replaces it and the gateway follows at once."""

    def __init__(self, table: RouteTable, on_wake: WakeHandler | None = None) -> None:
        self._table = table
        self._changed = asyncio.Event()
        self._on_wake = on_wake
        self.wakes: list[Wake] = []
        self.last_report: GatewayLoad | None = None

    @property
    def table(self) -> RouteTable:
        return self._table

    def set(self, table: RouteTable) -> None:
        self._table = table
        self._changed.set()

    async def watch(self) -> AsyncIterator[RouteTable]:
        sent = -1
        while True:
            if self._table.version != sent:
                sent = self._table.version
                yield self._table
                continue
            self._changed.clear()
            await self._changed.wait()

    async def wake(self, wake: Wake) -> None:
        self.wakes.append(wake)
        if self._on_wake is not None:
            result = self._on_wake(wake)
            if inspect.isawaitable(result):
                await result

    async def report(self, load: GatewayLoad) -> None:
        self.last_report = load


class HttpRouteSource:
    """Follows the control plane's route table by long polling.

    `GET {server}/v1/gateway/routes?after=V&wait=S` answers at once when the table's version
    is not V, otherwise when it changes or after S seconds (a server that does not hold
    the request simply answers at once, and the source waits `poll_s` before asking again).
    """

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        wait_s: float = 25.0,
        poll_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        headers["content-type"] = "application/json"  # wake and load bodies are JSON
        self._client = httpx.AsyncClient(
            base_url=server.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(wait_s + 10.0, connect=5.0),
            transport=transport,
        )
        self.wait_s = wait_s
        self.poll_s = poll_s

    async def watch(self) -> AsyncIterator[RouteTable]:
        version: int | None = None
        backoff = self.poll_s
        while True:
            params: dict[str, str | float] = {"wait": self.wait_s}
            if version is not None:
                params["after"] = version
            try:
                response = await self._client.get("/v1/gateway/routes", params=params)
                response.raise_for_status()
                table = RouteTable.model_validate_json(response.content)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("route table unavailable (%s); keeping the last one", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.poll_s
            if table.version != version:
                version = table.version
                yield table
            else:
                await asyncio.sleep(self.poll_s)

    async def wake(self, wake: Wake) -> None:
        try:
            response = await self._client.post("/v1/gateway/wake", content=wake.model_dump_json())
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # The load report carries `held` too, so the control plane still learns of it.
            log.warning("could not wake endpoint %s: %s", wake.endpoint, exc)

    async def report(self, load: GatewayLoad) -> None:
        try:
            response = await self._client.post("/v1/gateway/load", content=load.model_dump_json())
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("could not report load: %s", exc)  # the next report carries it all

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()
