"""The control plane in-process (FastAPI's TestClient), for API tests on either database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from corral.server.app import create_app
from corral.server.config import ServerOptions

ADMIN_TOKEN = "crl_admin"
JOIN_TOKEN = "crj_join"


def app_options(database_url: str, home: Path, **overrides: Any) -> ServerOptions:
    """A server on `database_url` with the bootstrap admin and join tokens above."""
    values: dict[str, Any] = {
        "home": home,
        "database_url": database_url,
        "bootstrap_admin_token": ADMIN_TOKEN,
        "bootstrap_join_token": JOIN_TOKEN,
        **overrides,
    }
    return ServerOptions(**values)


def in_process(
    database_url: str,
    home: Path,
    *,
    client: tuple[str, int] | None = None,
    app: dict[str, Any] | None = None,
    **overrides: Any,
) -> TestClient:
    """A TestClient of a fresh app; enter it (`with`) to run the app's lifespan. `app`
    goes to create_app (a clock, auth_failures...), `client` is the peer address seen."""
    created = create_app(app_options(database_url, home, **overrides), **(app or {}))
    return TestClient(created) if client is None else TestClient(created, client=client)


class AppTransport(httpx.BaseTransport):
    """The SDK's requests, handed to the app in-process through its TestClient."""

    def __init__(self, server: TestClient) -> None:
        self.server = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.server.request(
            request.method,
            str(request.url.copy_with(scheme="http", host="testserver", port=None)),
            headers=dict(request.headers),
            content=request.read(),
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def connected_node(server: TestClient, name: str) -> tuple[str, dict[str, str]]:
    """A node registered with the join token above and connected, in the app's store (no
    agent): its id, and the header its token goes in."""
    from corral.server.runtime import ControlPlane
    from corral.server.services import nodes
    from corral.wire import agent as wire

    cp: ControlPlane = server.app.state.cp  # type: ignore[attr-defined]
    inventory = wire.Inventory(
        hostname=name, cpus=8, memory_mb=16000, disk_mb=100000, gpu_backend="none"
    )
    with cp.store.transaction() as session:
        request = wire.RegisterRequest(join_token=JOIN_TOKEN, name=name, inventory=inventory)
        row, secret = nodes.register_node(session, request, 1.0)
        nodes.connect(session, row.id, wire.Hello(inventory=inventory, address=name), 2.0)
        return row.id, {"Authorization": f"Bearer {secret}"}
