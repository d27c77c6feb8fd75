"""Jobs, endpoints and dev pods in one list, newest first, a page at a time (the console's
Workloads page).

The three come from their own tables; each is read with the same keyset as
`services/jobs.list_jobs` (created time, then id, descending) and the pages merged. A
cursor is the (time, id) of the last row shown, exactly the shape of the jobs API's cursor;
ids are UUIDs, unique across the three tables, so one cursor orders them all. Each source
reads at most a page past the cursor (jobs through ix_jobs_submitted or
ix_jobs_workspace_submitted), so a page costs the same at row 50 and at row 100,000.

Views come from the services the API uses (jobs.list_views, endpoints.endpoint_view,
pods.pod_view), so a row says what `corral job get` / `endpoint get` / `pod get` would.
Endpoint and pod states are worked out from their replicas, not stored: with a state
filter those two sources are read past the cursor until a page matches (both stay small:
a fleet has thousands of jobs per endpoint or pod).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from corral.core.states import LIVE_JOB_STATES, EndpointState, JobState
from corral.server.services import endpoints as endpoint_service
from corral.server.services import jobs as job_service
from corral.server.services import pods as pod_service
from corral.server.services.pages import (
    Key,
    Page,
    PageRequest,
    beyond,
    decode_cursor,
    encode_cursor,
)
from corral.server.store.db import in_chunks
from corral.server.store.tables import Endpoint, Job, Pod, Workspace
from corral.wire.api import EndpointView, JobView
from corral.wire.pods import PodState, PodView

WorkloadKind = Literal["job", "endpoint", "pod"]
KINDS: tuple[WorkloadKind, ...] = ("job", "endpoint", "pod")
# The states each kind can be in (a state filter picks the kinds that have it).
STATES: dict[WorkloadKind, tuple[str, ...]] = {
    "job": tuple(JobState),
    "endpoint": tuple(EndpointState),
    "pod": get_args(PodState),
}
CURSOR_TYPES = (float, str)
# Endpoint and pod views cost a few queries each: computed this many at a time.
_BATCH = 50


@dataclass(frozen=True)
class WorkloadFilter:
    """workspaces None: every workspace (a cluster admin's); kinds: which of the three;
    state None: any."""

    workspaces: Sequence[Workspace] | None
    kinds: frozenset[WorkloadKind] = frozenset(KINDS)
    state: str | None = None

    def reads(self, kind: WorkloadKind) -> bool:
        return kind in self.kinds and (self.state is None or self.state in STATES[kind])


@dataclass(frozen=True)
class Listed:
    """One row: which kind of workload, and its view as the API shows it."""

    kind: WorkloadKind
    view: JobView | EndpointView | PodView


@dataclass(frozen=True)
class _Candidate:
    key: Key  # (created time, id)
    kind: WorkloadKind
    row: Any  # a Job row (viewed once chosen), or an endpoint's or pod's view


def list_workloads(
    session: Session, which: WorkloadFilter, page: PageRequest, now: float
) -> Page[Listed]:
    """One page, newest first, and the cursor of the next (None: no more). A cursor that
    is not one this list gave out is refused naming `cursor` (services/pages.py)."""
    after = decode_cursor(page.cursor, CURSOR_TYPES) if page.cursor else None
    candidates: list[_Candidate] = []
    more = False
    if which.reads("job"):
        jobs, jobs_more = _jobs(session, which, after, page.limit)
        candidates += jobs
        more |= jobs_more
    if which.reads("endpoint"):
        names = _workspace_names(session, which.workspaces)
        endpoints, endpoints_more = _endpoints(session, which, after, page.limit, names)
        candidates += endpoints
        more |= endpoints_more
    if which.reads("pod"):
        pods, pods_more = _pods(session, which, after, page.limit, now)
        candidates += pods
        more |= pods_more
    candidates.sort(key=lambda c: c.key, reverse=True)
    shown = candidates[: page.limit]
    more |= len(candidates) > page.limit
    job_views = iter(job_service.list_views(session, [c.row for c in shown if c.kind == "job"]))
    items = [
        Listed(c.kind, next(job_views) if c.kind == "job" else c.row) for c in shown
    ]  # list_views keeps the order it is given
    cursor = encode_cursor(shown[-1].key) if more and shown else None
    return Page(items, cursor)


def _workspace_names(session: Session, workspaces: Sequence[Workspace] | None) -> dict[str, str]:
    if workspaces is not None:
        return {w.id: w.name for w in workspaces}
    return dict(session.execute(select(Workspace.id, Workspace.name)).all())


def _scoped(
    query: Select[Any], column: InstrumentedAttribute[str], which: WorkloadFilter
) -> Select[Any]:
    if which.workspaces is None:
        return query
    ids = [w.id for w in which.workspaces]
    return query.where(column == ids[0] if len(ids) == 1 else column.in_(ids))


def _after(
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    after: Key | None,
) -> Select[Any]:
    if after is None:
        return query
    return query.where(beyond(columns, after, descending=True))


def _jobs(
    session: Session, which: WorkloadFilter, after: Key | None, limit: int
) -> tuple[list[_Candidate], bool]:
    # JobKind "job": an endpoint's replicas and a pod's runs are listed as their endpoint
    # and pod, not again as jobs (as `GET /v1/jobs?kind=job`).
    query = job_service.submitted_only(select(Job))
    query = _scoped(query, Job.workspace_id, which)
    if which.state in LIVE_JOB_STATES:
        # Few rows (bounded by the fleet and its queue): ix_jobs_state, then sorted.
        query = query.where(Job.state == which.state)
    elif which.state is not None:
        # An ended state may be most of the table: the page walks the time index and
        # checks the state on the way (an expression keeps planners off ix_jobs_state);
        # no index leads with (state, submitted_at).
        query = query.where(func.lower(Job.state) == which.state)
    columns = [Job.submitted_at, Job.id]
    query = _after(query, columns, after).order_by(*(c.desc() for c in columns))
    rows = list(session.scalars(query.limit(limit + 1)))
    found = [_Candidate((j.submitted_at, j.id), "job", j) for j in rows[:limit]]
    return found, len(rows) > limit


def _endpoints(
    session: Session,
    which: WorkloadFilter,
    after: Key | None,
    limit: int,
    names: dict[str, str],
) -> tuple[list[_Candidate], bool]:
    columns = [Endpoint.created_at, Endpoint.id]
    query = _after(_scoped(select(Endpoint), Endpoint.workspace_id, which), columns, after)
    query = query.order_by(*(c.desc() for c in columns))

    def views(rows: list[Endpoint]) -> list[_Candidate]:
        replicas = endpoint_service.replica_rows(session, [e.id for e in rows])
        return [
            _Candidate(
                (e.created_at, e.id),
                "endpoint",
                endpoint_service.endpoint_view(session, e, names[e.workspace_id], replicas[e.id]),
            )
            for e in rows
        ]

    return _matching(session, query, views, which.state, limit)


def _pods(
    session: Session,
    which: WorkloadFilter,
    after: Key | None,
    limit: int,
    now: float,
) -> tuple[list[_Candidate], bool]:
    columns = [Pod.created_at, Pod.id]
    query = _scoped(select(Pod), Pod.workspace_id, which).where(Pod.desired != "deleted")
    query = _after(query, columns, after).order_by(*(c.desc() for c in columns))
    workspaces: dict[str, Workspace] = {}

    def views(rows: list[Pod]) -> list[_Candidate]:
        wanted = {p.workspace_id for p in rows} - workspaces.keys()
        for chunk in in_chunks(sorted(wanted)):
            for w in session.scalars(select(Workspace).where(Workspace.id.in_(chunk))):
                workspaces[w.id] = w
        return [
            _Candidate(
                (p.created_at, p.id),
                "pod",
                pod_service.pod_view(session, workspaces[p.workspace_id], p, now),
            )
            for p in rows
        ]

    return _matching(session, query, views, which.state, limit)


def _matching(
    session: Session,
    query: Select[Any],
    views: Callable[[list[Any]], list[_Candidate]],
    state: str | None,
    limit: int,
) -> tuple[list[_Candidate], bool]:
    """Up to `limit` views of `query`'s rows in order whose state is `state` (any: None),
    and whether more follow. Without a state only limit + 1 rows are read."""
    if state is None:
        rows = list(session.scalars(query.limit(limit + 1)))
        return views(rows[:limit]), len(rows) > limit
    found: list[_Candidate] = []
    offset = 0
    while True:
        rows = list(session.scalars(query.offset(offset).limit(_BATCH)))
        for candidate in views(rows):
            if candidate.row.state == state:
                if len(found) == limit:
                    return found, True
                found.append(candidate)
        if len(rows) < _BATCH:
            return found, False
        offset += _BATCH
