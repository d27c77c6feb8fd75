"""/ui/queue: pending work in the order the scheduler will consider it, with each job's
reason, and quota use per workspace; /ui/queue/live is the part the page polls.

Who sees what (services/queue_view.py): a cluster admin every workspace's work; a
workspace's token its own jobs with names and reasons, and of other workspaces' pending
jobs only how many stand where in line, and its own quota row only.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from corral.server.api.deps import CP
from corral.server.auth import check_workspace_access
from corral.server.services.queue_view import QueueReader
from corral.web.render import html
from corral.web.session import PREFIX, Viewer
from corral.web.views import queue as view

router = APIRouter(prefix=PREFIX, include_in_schema=False)
POLL_S = 3


def _reader(request: Request) -> QueueReader:
    """The app's QueueReader: each poll then loads only what changed since the last one
    (a fresh snapshot of a large fleet costs a few hundred ms; a kept one tens)."""
    state = request.app.state
    reader: QueueReader | None = getattr(state, "console_queue", None)
    if reader is None:
        # Two first polls at once may each make one; one of them is kept.
        reader = state.console_queue = QueueReader()
    return reader


def _context(request: Request, who: Viewer, cp: CP) -> dict[str, object]:
    principal = who.principal
    visible: frozenset[str] | None = None
    if not principal.cluster_admin:
        # A token without a workspace (and not a cluster admin) reads no workspace's work.
        check_workspace_access(principal, principal.workspace or "", "viewer")
        visible = frozenset({principal.workspace or ""})
    now = cp.clock.now()
    with cp.store.read() as session:
        facts = _reader(request).read(session, now, visible)
    return {"queue": view.page(facts, now, principal.cluster_admin), "poll_s": POLL_S}


@router.get("/queue")
def queue_page(request: Request, who: Viewer, cp: CP) -> HTMLResponse:
    started = time.perf_counter()
    return html(request, "queue.html", _context(request, who, cp), visitor=who, started=started)


@router.get("/queue/live")
def queue_live(request: Request, who: Viewer, cp: CP) -> HTMLResponse:
    started = time.perf_counter()
    return html(
        request, "_queue_live.html", _context(request, who, cp), visitor=who, started=started
    )
