"""Who is looking at the console: the API token kept in an HttpOnly cookie, and the CSRF
check every action passes.

The cookie holds the token itself, so a page is exactly as allowed as the same token over
the API (the same principal, checked on every request: a revoked token ends the session
within the principal cache's few seconds). The CSRF token is an HMAC of a fixed label keyed
by the session's token: a page of another origin can neither read it nor compute it, and
any API replica can check it with no state of its own.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request

from corral.server.api.deps import control_plane, principal_of_token
from corral.server.api.errors import ApiError
from corral.server.auth import Principal, refuse_metrics_only
from corral.server.errors import Forbidden

PREFIX = "/ui"
COOKIE = "corral_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 8 * 1024  # a login or logout form: a token and a few fields


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"corral console csrf v1", hashlib.sha256).hexdigest()


class LoginNeeded(Exception):
    """No valid session: a page redirects to the login page, a fragment answers 401.
    `refused`: a cookie came with a token this server does not take (revoked, or a guess):
    answered 401, so that it counts toward the address's failed authentications as a bad
    bearer token does (app.AuthFailureLimit), and the cookie is deleted."""

    def __init__(self, next_path: str, *, refused: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.refused = refused


@dataclass(frozen=True)
class Visitor:
    """The console's caller: the token's principal and its CSRF token."""

    principal: Principal
    csrf: str

    @property
    def cluster_admin(self) -> bool:
        return self.principal.cluster_admin

    @property
    def can_act_on_nodes(self) -> bool:
        """Cordon, uncordon, drain: cluster admins only (node_ops checks it again)."""
        return self.principal.cluster_admin

    @property
    def read_only(self) -> bool:
        return not self.principal.at_least("member")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path on this server, never elsewhere
    (an open redirect would let a link log someone in and send them to a lookalike)."""
    if not value or not value.startswith(PREFIX + "/") or value.startswith("//"):
        return PREFIX + "/"
    if "\\" in value or any(ord(c) < 0x20 for c in value):
        return PREFIX + "/"
    return value


async def visitor(request: Request) -> Visitor:
    token = request.cookies.get(COOKIE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token:
        raise LoginNeeded(here)
    cp = control_plane(request)
    try:
        principal = refuse_metrics_only(await principal_of_token(cp, token))
    except (ApiError, Forbidden):
        raise LoginNeeded(here, refused=True) from None
    return Visitor(principal=principal, csrf=csrf_for(token))


async def actor(request: Request, who: Annotated[Visitor, Depends(visitor)]) -> Visitor:
    """A visitor whose request carries the session's CSRF token (every POST of the console)
    and, when the browser names one, comes from this server's own origin."""
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await read_form(request)).get(CSRF_FIELD)
    if sent is None or not hmac.compare_digest(sent, who.csrf):
        raise Forbidden("the page's CSRF token is missing or stale: reload the page")
    return who


def check_origin(request: Request) -> None:
    """Refuse a request a browser says came from another site's page."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise Forbidden("this request came from another site's page")


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (login, logout), first value of each field; bounded."""
    cached: dict[str, str] | None = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "too_large", f"a console form is at most {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    form = {k: v[0] for k, v in fields.items() if v}
    request.state.console_form = form
    return form


def login_url(next_path: str) -> str:
    return f"{PREFIX}/login?next={quote(safe_next(next_path), safe='/')}"


Viewer = Annotated[Visitor, Depends(visitor)]
Actor = Annotated[Visitor, Depends(actor)]
