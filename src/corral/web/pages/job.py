"""The job page: /ui/jobs/{workspace}/{name} — its spec, state and why, its attempts on a
timeline, goodput and cost, progress, and each replica's log as it grows.

Everything reads through the services the API's jobs routes use (jobs.job_view,
job_logs.read_logs, jobs.cancel_job), scoped by the same check: a token of another
workspace gets 403 from the page, its fragment, its series and its log stream alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from corral.core.states import TERMINAL_JOB_STATES
from corral.server.api.deps import control_plane, retry_stale
from corral.server.auth import Principal, check_workspace_access, may_act_in
from corral.server.errors import NotFound
from corral.server.runtime import ControlPlane
from corral.server.services import job_history, job_logs, recovery
from corral.server.services import jobs as service
from corral.server.services.effects import Effects
from corral.server.services.identity import workspace_by_name
from corral.server.services.specs import job_spec
from corral.server.store.tables import Job, Workspace
from corral.web.render import SECURITY_HEADERS, html
from corral.web.session import PREFIX, Actor, LoginNeeded, Viewer, Visitor, visitor
from corral.web.views import job as views
from corral.wire.api import JobView

router = APIRouter(prefix=PREFIX, include_in_schema=False)

POLL_S = 0.7  # how often a log stream looks for more in the store
FIRST_BYTES = 256 * 1024  # a stream starts at most this far from a log's end
KEEPALIVE_S = 15.0  # a comment line when quiet, so proxies and dead peers show
STREAM_S = 15 * 60.0  # then the browser reconnects (Last-Event-ID): auth checked again
RECHECK_S = 10.0  # a revoked token's stream ends within this (the principal cache's cost)


def _workspace(session: Session, name: str) -> Workspace:
    found = workspace_by_name(session, name)
    if found is None:
        raise NotFound.of(f"workspace '{name}'")
    return found


def _load(
    cp: ControlPlane, principal: Principal, workspace: str, name: str
) -> tuple[JobView, list[job_history.AttemptRun], float]:
    check_workspace_access(principal, workspace, "viewer")
    now = cp.clock.now()
    with cp.store.read() as session:
        ws = _workspace(session, workspace)
        job = service.get_job(session, ws, name)
        view = service.job_view(session, job, ws.name, now=now, catalog=cp.catalog)
        return view, job_history.attempt_runs(session, job), now


def _page(request: Request, who: Visitor, workspace: str, name: str) -> views.JobPage:
    view, runs, now = _load(control_plane(request), who.principal, workspace, name)
    return views.build(view, runs, now, can_act=_may_act(who, workspace))


def _may_act(who: Visitor, workspace: str) -> bool:
    # The cancel button shows exactly where the POST's own check would let it through.
    return may_act_in(who.principal, workspace, "member")


@router.get("/jobs/{workspace}/{name}")
def job_page(
    request: Request,
    workspace: str,
    name: str,
    who: Viewer,
    replica: int = Query(0, ge=0, description="whose log to follow"),
) -> HTMLResponse:
    started = time.perf_counter()
    page = _page(request, who, workspace, name)
    rank = min(replica, max(page.replica_ranks, default=0))
    context = {"page": page, "job": page.job, "rank": rank}
    return html(request, "job.html", context, visitor=who, started=started)


@router.get("/jobs/{workspace}/{name}/summary")
def job_summary(request: Request, workspace: str, name: str, who: Viewer) -> HTMLResponse:
    """The part of the page that changes while the job lives (htmx polls it)."""
    started = time.perf_counter()
    page = _page(request, who, workspace, name)
    return html(
        request, "_job_summary.html", {"page": page, "job": page.job}, visitor=who, started=started
    )


@router.get("/jobs/{workspace}/{name}/progress")
def job_progress(request: Request, workspace: str, name: str, who: Viewer) -> JSONResponse:
    """The progress chart's series: training steps over time, attempt by attempt."""
    cp = control_plane(request)
    check_workspace_access(who.principal, workspace, "viewer")
    now = cp.clock.now()
    with cp.store.read() as session:
        ws = _workspace(session, workspace)
        job = service.get_job(session, ws, name)
        attempts, _ = recovery.attempt_views(session, job, now)  # as job_view reads them
        runs = job_history.attempt_runs(session, job)
        marks = job_history.attempt_marks(session, job)
    series = views.progress_series(attempts[-job_history.MAX_ATTEMPTS :], runs, marks, now)
    return JSONResponse(series, headers={"cache-control": "no-store"})


@router.post("/jobs/{workspace}/{name}/cancel")
def cancel(request: Request, workspace: str, name: str, who: Actor) -> HTMLResponse:
    """Cancel as `POST /v1/workspaces/{ws}/jobs/{name}/cancel` does; the new summary."""
    started = time.perf_counter()
    cp = control_plane(request)
    check_workspace_access(who.principal, workspace, "member")

    def run() -> Effects:
        with cp.store.transaction() as session:
            ws = _workspace(session, workspace)
            job = service.get_job(session, ws, name)
            return service.cancel_job(session, job, cp.clock.now())

    cp.apply(retry_stale(run))
    page = _page(request, who, workspace, name)
    return html(
        request, "_job_summary.html", {"page": page, "job": page.job}, visitor=who, started=started
    )


# -- following a replica's log --------------------------------------------------------------


@router.get("/jobs/{workspace}/{name}/logs/stream")
async def log_stream(
    request: Request,
    workspace: str,
    name: str,
    who: Viewer,
    replica: int = Query(0, ge=0, description="replica rank"),
) -> StreamingResponse:
    """Server-sent events: the replica's log of the current attempt, from its start (its
    last FIRST_BYTES when longer), then what arrives, until the replica has ended and all
    its log is in (an `end` event). A reconnecting browser sends Last-Event-ID
    (attempt:offset) and goes on from there."""
    cp = control_plane(request)
    check_workspace_access(who.principal, workspace, "viewer")
    job_id = await asyncio.to_thread(_open, cp, workspace, name, replica)
    cursor = _resume(request.headers.get("last-event-id"))
    headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
    return StreamingResponse(
        _follow(request, cp, job_id, replica, cursor),
        media_type="text/event-stream",
        headers=headers,
    )


def _open(cp: ControlPlane, workspace: str, name: str, rank: int) -> str:
    with cp.store.read() as session:
        ws = _workspace(session, workspace)
        job = service.get_job(session, ws, name)
        if rank >= max(job_spec(job).replicas, job.next_replicas or 0):
            raise NotFound(f"job '{name}' has no replica {rank}")
        return job.id


def _resume(last_event_id: str | None) -> tuple[int, int] | None:
    """(attempt, offset) from an event id this stream sent; None for anything else."""
    attempt, _, offset = (last_event_id or "").partition(":")
    if not (f"{attempt}{offset}".isascii() and attempt.isdigit() and offset.isdigit()):
        return None
    return int(attempt), int(offset)


@dataclass(frozen=True)
class _Read:
    attempt: int  # 0: the job has not started an attempt yet
    data: str = ""
    start: int = 0  # byte offset `data` starts at
    next_offset: int = 0
    end: str | None = None  # why the stream ends; None: it goes on


def _read(cp: ControlPlane, job_id: str, rank: int, cursor: tuple[int, int] | None) -> _Read:
    """What is new in the replica's log since `cursor` (None: from its start, or from its
    last FIRST_BYTES)."""
    with cp.store.read() as session:
        job = session.get(Job, job_id)
        if job is None:
            return _Read(0, end="the job was deleted")
        done = job.state in TERMINAL_JOB_STATES
        attempt, offset = cursor if cursor is not None else (job.attempt, 0)
        if attempt == 0:
            return _Read(0, end=f"the job {job.state} before it ran" if done else None)
        size = job_history.log_size(session, job, attempt, rank)
        if size is None:  # no such replica in that attempt (not placed, or fewer now)
            over = done or job.attempt > attempt
            return _Read(attempt, next_offset=offset, end=_ended(job, attempt) if over else None)
        if cursor is None and size > FIRST_BYTES:
            offset = size - FIRST_BYTES
        page = job_logs.read_logs(session, job, rank, offset, attempt)
        start = page.next_offset - len(page.data.encode())
        end = _ended(job, attempt) if page.complete else None
        return _Read(attempt, page.data, start, page.next_offset, end)


def _ended(job: Job, attempt: int) -> str:
    if job.attempt > attempt:
        return (
            f"attempt {attempt} is over; the job is on attempt {job.attempt}: reload to follow it"
        )
    if job.state in TERMINAL_JOB_STATES:
        return f"end of log: the job {job.state}"
    return "end of log: the replica has ended"


async def _follow(
    request: Request, cp: ControlPlane, job_id: str, rank: int, cursor: tuple[int, int] | None
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    began = quiet = checked = time.monotonic()
    while time.monotonic() - began < STREAM_S:
        if await request.is_disconnected():
            return
        if time.monotonic() - checked > RECHECK_S:
            checked = time.monotonic()
            try:
                await visitor(request)
            except LoginNeeded:
                yield _event(json.dumps("the session has ended: log in again"), kind="end")
                return
        got = await asyncio.to_thread(_read, cp, job_id, rank, cursor)
        if got.attempt:
            if cursor is None and got.start > 0:
                kib = got.start // 1024
                note = f"[… the first {kib} KiB are not shown: `corral job logs` has them all]\n"
                yield _event(json.dumps(note))
            cursor = (got.attempt, got.next_offset)
        if got.data:
            yield _event(json.dumps(got.data), f"{got.attempt}:{got.next_offset}")
            quiet = time.monotonic()
        if got.end is not None:
            yield _event(json.dumps(got.end), kind="end")
            return
        if not got.data:
            if time.monotonic() - quiet > KEEPALIVE_S:
                yield ": still here\n\n"
                quiet = time.monotonic()
            await asyncio.sleep(POLL_S)


def _event(data: str, event_id: str | None = None, kind: str | None = None) -> str:
    lines = [] if kind is None else [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {data}")
    return "\n".join(lines) + "\n\n"
