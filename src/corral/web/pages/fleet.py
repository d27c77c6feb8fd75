"""The fleet page (stub: being built)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from corral.web.render import html
from corral.web.session import PREFIX, Viewer

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/fleet")
def fleet_page(request: Request, who: Viewer) -> HTMLResponse:
    started = time.perf_counter()
    return html(request, "stub.html", {"title": "Fleet"}, visitor=who, started=started)
