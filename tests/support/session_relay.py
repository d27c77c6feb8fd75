"""The control plane's session relay, reduced, for tests of the node's session server: it
accepts one dial-back (checking the ticket) and bridges it to whoever connects to `port`
(TCP), where an asyncssh client connects as a user's `ssh` would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncssh
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from corral.wire.sessions import RELAY_FRAME_BYTES

TICKET = "tk_" + "a" * 40


class Relay:
    """The control plane's relay, reduced: one dial-back, bridged to whoever connects to
    `port` (TCP)."""

    def __init__(self, ticket: str = TICKET) -> None:
        self.ticket = ticket
        self.dialed: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.refused = 0
        self.ws: Server | None = None
        self.tcp: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Relay:
        self.ws = await serve(
            self._dial_back,
            "127.0.0.1",
            0,
            process_request=self._check,
            max_size=RELAY_FRAME_BYTES + 4096,
            compression=None,
        )
        self.tcp = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.tcp.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None and self.tcp is not None
        self.tcp.close()
        self.ws.close()
        await self.ws.wait_closed()

    @property
    def url(self) -> str:
        assert self.ws is not None
        port = next(iter(self.ws.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def _check(self, _conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.ticket}":
            self.refused += 1
            return Response(401, "Unauthorized", Headers(), b"bad ticket")
        assert request.path.startswith("/v1/agent/relay/")
        return None

    async def _dial_back(self, ws: ServerConnection) -> None:
        await self.dialed.put(ws)
        await ws.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = await self.dialed.get()

        async def up() -> None:
            while data := await reader.read(RELAY_FRAME_BYTES):
                await ws.send(data)
            await ws.close()

        async def down() -> None:
            try:
                async for message in ws:
                    assert isinstance(message, bytes)
                    writer.write(message)
                    await writer.drain()
            finally:  # a dial-back lost without a close frame raises: close the client anyway
                writer.close()

        # Either side failing ends both: the user's connection closes with its dial-back.
        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Keys:
    host: asyncssh.SSHKey
    user: asyncssh.SSHKey
