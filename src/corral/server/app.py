"""The FastAPI application and its lifespan: migrate, bootstrap, run the controllers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from html import escape as html_escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__
from corral.providers.catalog import CatalogError, load_catalog
from corral.server.api import (
    agent,
    agent_bundle,
    artifacts,
    endpoints,
    errors,
    identity,
    jobs,
    metrics,
    nodes,
    pods,
    pools,
    quotas,
    relay,
    secrets,
    status,
    wheels,
)
from corral.server.artifacts.store import open_store
from corral.server.auth import AuthFailures, JoinTokenRejected, hash_token
from corral.server.clock import Clock, SystemClock
from corral.server.config import ServerOptions, SettingError
from corral.server.controllers import endpoints as endpoint_controller
from corral.server.controllers import liveness, scheduler
from corral.server.controllers import pods as pod_controller
from corral.server.controllers import pools as pool_controller
from corral.server.hub import AgentHub
from corral.server.lease import Lease, keep
from corral.server.marker import ApiMarker
from corral.server.runtime import ControlPlane
from corral.server.secretbox import SecretBox
from corral.server.services.identity import bootstrap
from corral.server.services.sessions import close_dangling
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import Node
from corral.web import install as install_console
from corral.web.session import COOKIE as CONSOLE_COOKIE
from corral.web.session import PREFIX as CONSOLE_PREFIX
from corral.wire.artifacts import MAX_UPLOAD_BYTES

log = logging.getLogger("corral.server")

# Bounds on what one request may make the server hold. The head (request line and
# headers) is bounded by the HTTP parser (server/main.py); its count of headers here.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_HEADERS = 100
CONTROLLER_STOP_S = 10.0  # how long shutdown waits for each controller to stop


def _reset_connections(store: Store) -> None:
    # No agent is connected to a process that has just started, whatever the store says.
    with store.transaction() as session:
        session.query(Node).filter(Node.connected.is_(True)).update({"connected": False})


async def _respond(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    # The shape of api/errors.py: these answers are sent before FastAPI sees the request.
    body = json.dumps({"error": {"code": code, "message": message, "fields": []}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _respond_page(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    # The console's person reads this one (a browser), not a client: a page, not JSON.
    body = (
        "<!doctype html><meta charset=utf-8><title>corral</title>"
        f"<p style='font:15px system-ui;margin:40px'>{html_escape(message)}</p>"
    ).encode()
    raw = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestBounds:
    """Refuse requests too big to hold: too many headers (431), a body over `max_body`
    (413), whether announced by Content-Length or sent chunked. WebSockets (the agent
    channel) pass: their frames are bounded by the server's ws_max_size.

    Paths matching `large` (the artifact uploads) may send up to `max_large` bytes; a
    chunked body there is passed on as it comes, for the route reads and bounds it
    itself (api/artifacts.py) rather than have it held here whole."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY_BYTES,
        max_headers: int = MAX_HEADERS,
        large: Iterable[str] = (),
        max_large: int = MAX_UPLOAD_BYTES,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers
        self.large = [re.compile(p) for p in large]
        self.max_large = max_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_headers:
            await _respond(
                send,
                431,
                "too_large",
                f"too many request headers: {len(headers)}, at most {self.max_headers}",
                {"connection": "close"},
            )
            return
        length = next((v for k, v in headers if k == b"content-length"), None)
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        path: str = scope.get("path", "")
        large = any(p.match(path) for p in self.large)
        limit = self.max_large if large else self.max_body
        if length is not None and chunked:
            # h11 lets Transfer-Encoding win; a proxy in front may go by Content-Length and
            # read a second, smuggled request from the same bytes. Refuse and close.
            await _respond(
                send,
                400,
                "bad_request",
                "a request may not have both Content-Length and Transfer-Encoding",
                {"connection": "close"},
            )
            return
        if length is not None:
            # The HTTP parser has already refused a malformed or doubled Content-Length.
            if int(length) > limit:
                await self._too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        if not chunked or large:
            await self.app(scope, receive, send)
            return
        # Chunked: nothing says how much will come, so read it here, up to the bound.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send, self.max_body)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, limit: int) -> None:
        # Connection: close, for the server not to read (and drop) the rest of the body.
        await _respond(
            send,
            413,
            "too_large",
            f"the request body is larger than {limit} bytes",
            {"connection": "close"},
        )


class AuthFailureLimit:
    """Answer 429 to a client address that has been refused (401) too often lately.

    Every 401 counts: a bad or missing user token, a bad join token. The bookkeeping is
    auth.AuthFailures; this only feeds it the clock and the answers.
    """

    def __init__(
        self,
        app: ASGIApp,
        failures: AuthFailures,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.failures = failures
        self.monotonic = monotonic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        wait = self.failures.retry_after(address, self.monotonic())
        if wait > 0 and not _recently_valid(scope):
            seconds = max(1, math.ceil(wait))
            message = f"too many failed authentications from this address; try again in {seconds} s"
            if str(scope.get("path", "")).startswith(CONSOLE_PREFIX + "/"):
                await _respond_page(send, 429, message, {"retry-after": str(seconds)})
            else:
                await _respond(
                    send, 429, "too_many_requests", message, {"retry-after": str(seconds)}
                )
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.failures.failed(address, self.monotonic())
            await send(message)

        await self.app(scope, receive, watch)


def _recently_valid(scope: Scope) -> bool:
    """A token this server accepted in the last few seconds passes even from a blocked
    address: every process of a node (or of `corral up`) shares one, and one tenant's
    guesses must not lock out the gateway, the CLI or other tenants. A guess is never in
    the cache, so guessing stays blocked."""
    app = scope.get("app")
    cp = getattr(getattr(app, "state", None), "cp", None)
    if cp is None:
        return False
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return cp.principals.get(hash_token(token.strip())) is not None
        if name == b"cookie":  # the console's session carries the same tokens
            token = cookie_parser(value.decode("latin-1")).get(CONSOLE_COOKIE, "")
            if token and cp.principals.get(hash_token(token)) is not None:
                return True
    return False


def create_app(
    options: ServerOptions,
    clock: Clock | None = None,
    *,
    auth_failures: AuthFailures | None = None,
    max_body: int = MAX_BODY_BYTES,
    secret_box: SecretBox | None = None,
    lease: Lease | None = None,
) -> FastAPI:
    clock = clock or SystemClock()
    # Before anything starts: an unusable key file (readable by others, named but missing)
    # stops the server here with a SettingError that names the file.
    box = secret_box or SecretBox.from_settings(options.home)
    try:
        artifact_store = open_store(options.resolved_artifact_store())
    except (ValueError, OSError) as exc:
        raise SettingError(f"CORRAL_ARTIFACT_STORE: {exc}") from None
    try:
        catalog = load_catalog(options.catalog)
    except CatalogError as exc:
        raise SettingError(f"CORRAL_CATALOG: {exc}") from None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if lease is None:
            store = Store(options.resolved_database_url())
            upgrade(store.engine)
            held = Lease(store)
            # Before anything is written: a second server on this store stops here
            # (LeaseHeld) instead of marking the first one's nodes disconnected.
            await asyncio.to_thread(held.acquire, clock.now, options.lease_silent_s)
        else:  # taken by `corral server` before uvicorn started, on a migrated store
            held, store = lease, lease.store
        bootstrap(
            store,
            clock.now(),
            options.home,
            options.bootstrap_admin_token,
            options.bootstrap_join_token,
        )
        _reset_connections(store)
        cp = ControlPlane(
            options,
            store,
            clock,
            AgentHub(
                store,
                options.resolved_checkpoint_root(),
                secrets=box,
                wheelhouse=options.wheelhouse is not None,
            ),
            started_at=clock.now(),
            lease=held,
            artifacts=artifact_store,
            catalog=catalog,
        )
        cp.loop = asyncio.get_running_loop()
        cp.hub.bind(cp.loop)
        app.state.cp = cp
        app.state.secret_box = box
        with store.transaction() as session:
            close_dangling(session, clock.now())
        tasks = [
            asyncio.create_task(scheduler.run(cp), name="scheduler"),
            asyncio.create_task(liveness.run(cp), name="liveness"),
            asyncio.create_task(endpoint_controller.run(cp), name="endpoints"),
            asyncio.create_task(pod_controller.run(cp), name="pods"),
            asyncio.create_task(pool_controller.run(cp), name="pools"),
            asyncio.create_task(keep(held, clock, options.lease_silent_s), name="lease"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a controller that ignores its cancellation is named, not waited on.
            _, stuck = await asyncio.wait(tasks, timeout=CONTROLLER_STOP_S)
            for task in stuck:
                log.error(
                    "the %s controller did not stop within %g s", task.get_name(), CONTROLLER_STOP_S
                )
            await cp.hub.close()
            with contextlib.suppress(Exception):  # a store gone away: the lease lapses
                await asyncio.to_thread(held.release)
            store.close()

    app = FastAPI(title="corral", version=__version__, lifespan=lifespan)
    errors.install(app)
    app.add_exception_handler(JoinTokenRejected, _join_rejected)
    # The last added runs first: a client over its failures is refused before anything.
    app.add_middleware(RequestBounds, max_body=max_body, large=artifacts.LARGE_BODIES)
    app.add_middleware(AuthFailureLimit, failures=auth_failures or AuthFailures())
    app.add_middleware(ApiMarker)  # outermost: even a 413 or 429 says it is corral's

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, object]:
        return {"ok": True, "version": __version__}

    for module in (
        jobs,
        endpoints,
        nodes,
        identity,
        quotas,
        secrets,
        agent,
        status,
        metrics,
        pods,
        pools,
        relay,
        artifacts,
        wheels,
        agent_bundle,
    ):
        app.include_router(module.router)
    app.include_router(artifacts.agent_router)
    app.include_router(jobs.every_router)
    app.include_router(endpoints.gateway_router)
    install_console(app)  # the web console: /ui, same port, same tokens
    return app


async def _join_rejected(_: Request, exc: Any) -> JSONResponse:
    assert isinstance(exc, JoinTokenRejected)
    # "reason" (unknown, expired, used_up, revoked) lets an agent tell its operator why.
    error = {"code": "unauthorized", "message": exc.message, "fields": [], "reason": exc.reason}
    return JSONResponse({"error": error}, status_code=401)
