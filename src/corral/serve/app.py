"""Turn an instance of a service class into an ASGI app (FastAPI underneath).

The app listens at once and reports `503 loading` on its readiness path while the setup
hook runs (model loading can take minutes); only then does readiness turn 200 and the
handlers answer. The gateway sends traffic to a replica only after its readiness passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.serve.access import AccessLog
from corral.serve.decorators import HandlerSpec, handler_spec, is_setup

log = logging.getLogger("corral.serve")
DEFAULT_READINESS_PATH = "/health"


@dataclass
class _Status:
    state: str = "loading"  # loading | ready | failed
    error: str | None = None


class NotReady(Exception):
    pass


class BadRequest(Exception):
    """Raise from a handler to answer 400 with this message."""


def _collect(service: object) -> tuple[list[tuple[HandlerSpec, Callable[..., Any]]], list[Any]]:
    handlers: list[tuple[HandlerSpec, Callable[..., Any]]] = []
    setups: list[Any] = []
    for name, member in inspect.getmembers(type(service)):
        spec = handler_spec(member)
        if spec is not None:
            handlers.append((spec, getattr(service, name)))
        elif is_setup(member):
            setups.append(getattr(service, name))
    if not handlers:
        raise ValueError(
            f"{type(service).__name__} has no handlers: mark methods with "
            "@corral.serve.handler('/path', method='POST')"
        )
    seen: set[tuple[str, str]] = set()
    for spec, _ in handlers:
        if (spec.path, spec.method) in seen:
            raise ValueError(f"two handlers for {spec.method} {spec.path}")
        seen.add((spec.path, spec.method))
    return handlers, setups


def _sse(item: object) -> bytes:
    if isinstance(item, BaseModel):
        data = item.model_dump_json()
    elif isinstance(item, str | bytes):
        data = item.decode() if isinstance(item, bytes) else item
    else:
        data = json.dumps(item)
    return f"data: {data}\n\n".encode()


async def _sse_stream(items: AsyncIterator[object]) -> AsyncIterator[bytes]:
    async for item in items:
        yield _sse(item)
    yield b"data: [DONE]\n\n"


def _route(fn: Callable[..., Any], status: _Status) -> tuple[Callable[..., Any], bool]:
    """A FastAPI endpoint calling `fn`, with its annotations resolved in fn's own module."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    parameters = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    streaming = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    is_async = inspect.iscoroutinefunction(fn)

    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        if status.state != "ready":
            raise NotReady()
        if inspect.isasyncgenfunction(fn):
            return StreamingResponse(
                _sse_stream(fn(*args, **kwargs)), media_type="text/event-stream"
            )
        if inspect.isgeneratorfunction(fn):
            sync_items: Iterable[object] = fn(*args, **kwargs)
            return StreamingResponse(
                _sse_stream(iterate_in_threadpool(iter(sync_items))),
                media_type="text/event-stream",
            )
        if is_async:
            return await fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    returns = inspect.Signature.empty if streaming else hints.get("return", inspect.Signature.empty)
    endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=returns
    )
    endpoint.__name__ = getattr(fn, "__name__", "handler")
    endpoint.__doc__ = fn.__doc__
    return endpoint, streaming


class _Logged:
    """Each request into the access log once it has been answered (streams included)."""

    def __init__(self, app: ASGIApp, access: AccessLog) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            client = scope.get("client")
            self.access.request(
                (str(client[0]), int(client[1])) if client else None,
                headers,
                scope["method"],
                scope["path"],
                scope.get("http_version", "1.1"),
                status,
                started,
            )


def build_app(
    service: object,
    *,
    readiness_path: str | None = None,
    on_setup_failed: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The ASGI app for `service` (an instance of a class with @handler methods)."""
    handlers, setups = _collect(service)
    readiness = str(
        readiness_path or getattr(service, "readiness_path", None) or DEFAULT_READINESS_PATH
    )
    status = _Status()

    async def run_setup() -> None:
        try:
            for hook in setups:
                if inspect.iscoroutinefunction(hook):
                    await hook()
                else:
                    await run_in_threadpool(hook)
        except Exception as exc:
            status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("setup of %s failed", type(service).__name__)
            if on_setup_failed is not None:
                on_setup_failed(exc)
            return
        status.state = "ready"
        log.info("%s is ready", type(service).__name__)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(run_setup())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    app = FastAPI(title=type(service).__name__, lifespan=lifespan)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "loading", "message": "the service is still loading"}},
            status_code=503,
            headers={"retry-after": "1"},
        )

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": {"code": "bad_request", "message": str(exc)}}, 400)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("handler for %s failed", request.url.path)
        body = {"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        return JSONResponse(body, 500)

    async def ready() -> JSONResponse:
        if status.state == "ready":
            return JSONResponse({"status": "ready"})
        if status.state == "failed":
            return JSONResponse({"status": "failed", "error": status.error}, status_code=500)
        return JSONResponse({"status": "loading"}, status_code=503)

    app.add_api_route(readiness, ready, methods=["GET"], include_in_schema=False)
    app.add_middleware(_Logged, access=AccessLog(readiness))
    for spec, fn in handlers:
        endpoint, streaming = _route(fn, status)
        if streaming:
            app.add_api_route(
                spec.path,
                endpoint,
                methods=[spec.method],
                response_model=None,
                response_class=StreamingResponse,
            )
        else:
            app.add_api_route(spec.path, endpoint, methods=[spec.method])
    return app
