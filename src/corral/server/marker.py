"""Every answer of the control plane's API says that it is one (`corral-api: 1`), so that a
client pointed at something else (the gateway, another web server on the port) can say so
instead of reporting that server's 404 as if corral had said it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"corral-api"
VERSION = b"1"  # the REST API's major version, as in its /v1/ paths


class ApiMarker:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, VERSION)]
            await send(message)

        await self.app(scope, receive, marked)
