"""Templates and the filters pages share; every console answer goes out through here.

Pages render from view models built by the pure functions in `views/` (no I/O in a
template): a template formats, it never decides. `Server-Timing` carries the time the
handler took, so `bench/console.py` and a browser's devtools read the server's share.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from corral import __version__
from corral.web.links import endpoint_page, job_page, node_page
from corral.web.session import CSRF_FIELD, PREFIX, Visitor

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# What a console answer may load and do: its own scripts and styles only (no CDN, no inline
# script: htmx's eval is off), never framed by another site.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def age(seconds: float | None) -> str:
    """12 s, 4 m, 3 h, 2 d: how long ago or how long, in the unit that reads best."""
    if seconds is None or math.isnan(seconds):
        return "—"
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} m"
    if s < 36 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def stamp(ts: float | None) -> str:
    """A moment in UTC, to the second."""
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def money(usd: float | None) -> str:
    if usd is None:
        return "—"
    return f"${usd:,.2f}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(age=age, stamp=stamp, money=money, pct=pct)
    env.globals.update(prefix=PREFIX, version=__version__, csrf_field=CSRF_FIELD)
    env.globals.update(node_page=node_page, job_page=job_page, endpoint_page=endpoint_page)
    return env


ENV = _environment()
# A page bigger than this goes gzipped to a browser that takes it: the fleet of 1,000 nodes
# is ~1.9 MB of HTML, polled every 10 s by every open tab (~10 ms to compress at level 4).
GZIP_OVER = 16 * 1024


def html(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    visitor: Visitor | None = None,
    status: int = 200,
    started: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """`template` rendered with `context` plus what every page has: the visitor, the path
    (for the navigation), the CSRF token. `started` (time.perf_counter() when the handler
    began) is reported in Server-Timing with the render."""
    begin = time.perf_counter()
    body = ENV.get_template(template).render(
        **context,
        visitor=visitor,
        path=request.url.path,
        csrf=visitor.csrf if visitor else "",
    )
    rendered = time.perf_counter()
    extra = {**SECURITY_HEADERS, **(headers or {})}
    payload = body.encode()
    if len(payload) > GZIP_OVER and "gzip" in request.headers.get("accept-encoding", ""):
        payload = gzip.compress(payload, compresslevel=4)
        extra.update({"content-encoding": "gzip", "vary": "accept-encoding"})
    end = time.perf_counter()
    timing = f"render;dur={(rendered - begin) * 1000:.1f}, gzip;dur={(end - rendered) * 1000:.1f}"
    if started is not None:
        timing += f", total;dur={(end - started) * 1000:.1f}"
    out = HTMLResponse(payload, status_code=status, headers=extra)
    out.headers["server-timing"] = timing
    return out
