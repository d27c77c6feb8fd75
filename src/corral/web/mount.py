"""Put the console on the API's app: its routers, its static files, and how its errors
read (HTML for a person; the API's JSON stays as it is for every other path)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from corral.server.api.errors import ApiError, domain_status
from corral.server.errors import DomainError
from corral.web.pages import endpoint, fleet, job, login, node, queue, sim, workloads
from corral.web.render import STATIC, html
from corral.web.session import COOKIE, PREFIX, LoginNeeded, login_url, safe_next

Handler = Callable[[Request, Exception], Awaitable[Response]]
ApiHandler = Callable[[Request, Any], Response | Awaitable[Response]]

# Every router of the console (tests/security reads its routes off these).
PAGES = (login, fleet, node, workloads, job, endpoint, queue, sim)

TITLES = {401: "log in", 403: "not allowed", 404: "not found", 409: "conflict", 422: "bad input"}


def install(app: FastAPI) -> None:
    for module in PAGES:
        app.include_router(module.router)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    app.add_exception_handler(LoginNeeded, _login_needed)
    for kind in (DomainError, ApiError, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _for_people(app.exception_handlers.get(kind)))


async def _login_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginNeeded)
    target = login_url(exc.next_path)
    answer: Response
    if request.headers.get("hx-request"):
        # A fragment's poll: htmx follows HX-Redirect to the login page.
        answer = Response(status_code=401, headers={"hx-redirect": target, "x-login": target})
    elif exc.refused:
        message = "your session has ended (the token is no longer valid here): log in again"
        context = {"error": message, "next": safe_next(exc.next_path)}
        answer = html(request, "login.html", context, status=401)
    else:
        return RedirectResponse(target, status_code=303)
    if exc.refused:
        answer.delete_cookie(COOKIE, path=PREFIX)
    return answer


def _for_people(api_handler: ApiHandler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(PREFIX + "/") or request.url.path.startswith(
            PREFIX + "/static/"
        ):
            if api_handler is None:
                raise exc
            answer = api_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        status, message = _status_message(exc)
        if request.headers.get("hx-request"):
            return html(request, "_error.html", {"message": message}, status=status)
        title = TITLES.get(status, "error")
        return html(request, "error.html", {"title": title, "message": message}, status=status)

    return handle


def _status_message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, DomainError):
        return domain_status(exc), exc.message
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, RequestValidationError):
        return 422, "; ".join(_field_error(e) for e in exc.errors()[:5])
    return 500, "something went wrong"


def _field_error(error: Any) -> str:
    # FastAPI's loc starts with where (query, path): "replica: must be >= 0".
    loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body")]
    return f"{'.'.join(loc) or 'input'}: {error.get('msg', 'invalid')}"
