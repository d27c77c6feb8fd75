"""Logging in and out: an API token in, an HttpOnly cookie out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from corral.server.api.deps import control_plane, principal_of_token
from corral.server.api.errors import ApiError
from corral.server.auth import refuse_metrics_only
from corral.server.errors import Forbidden
from corral.web.render import SECURITY_HEADERS, html
from corral.web.session import COOKIE, PREFIX, Actor, check_origin, read_form, safe_next

router = APIRouter(prefix=PREFIX, include_in_schema=False)

MAX_TOKEN_CHARS = 512


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/fleet", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return html(request, "login.html", {"error": None, "next": safe_next(next)})


@router.post("/login")
async def login(request: Request) -> Response:
    # Another site's page must not log this browser in with a token of its choosing.
    check_origin(request)
    form = await read_form(request)
    target = safe_next(form.get("next"))
    token = form.get("token", "").strip()

    def refuse(message: str, status: int) -> Response:
        # 401 counts toward the address's failed authentications (app.AuthFailureLimit).
        return html(request, "login.html", {"error": message, "next": target}, status=status)

    if not token:
        return refuse("give an API token", 400)
    if len(token) > MAX_TOKEN_CHARS:
        return refuse(f"that is not a token: tokens are under {MAX_TOKEN_CHARS} characters", 400)
    try:
        refuse_metrics_only(await principal_of_token(control_plane(request), token))
    except ApiError:
        return refuse("that token is not valid on this server", 401)
    except Forbidden:
        return refuse("a metrics token reads /metrics only: log in with a user token", 403)
    out = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    out.set_cookie(
        COOKIE,
        token,
        httponly=True,
        # Lax, not Strict: a link to a console page from a chat or a ticket opens it logged
        # in. Every change is a POST (never sent cross-site under Lax) with a CSRF token.
        samesite="lax",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    return out


@router.post("/logout")
def logout(_: Actor) -> RedirectResponse:
    out = RedirectResponse(PREFIX + "/login", status_code=303, headers=SECURITY_HEADERS)
    out.delete_cookie(COOKIE, path=PREFIX)
    return out
