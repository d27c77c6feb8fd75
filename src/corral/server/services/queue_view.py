"""The pending queue as the scheduler sees it, for the console's Queue page.

The order is the scheduler's own: a `Round` (core/scheduler/pipeline.py) over the same
snapshot the scheduler controller loads, its `decisions()` taken one by one; they come in
FairQueue order (priority ▸ within guarantee ▸ DRF share ▸ oldest), and a job the round
would place charges its workspace's share exactly as the next real round will. Nothing is
applied: the round is thrown away. Reasons shown are the stored ones (what the last real
round said, with the pool controller's notes); the dry run's outcome adds "fits now".

Quota use is the round's too (QuotaBook): GPUs counted against each guarantee, and the
GPUs of the jobs it counts as borrowing (reclaimable) now.

Who sees what: `visible` None shows every workspace (a cluster admin). Otherwise another
workspace's pending job keeps only its place in line — no name, workspace, size or reason
leaves this module — and quota rows are the visible workspaces' only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from corral.core.placement import Outcome, Snapshot
from corral.core.scheduler import Round, Scheduler
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import in_chunks
from corral.server.store.tables import Endpoint, Job, Pod

# Decisions taken from the dry-run round: each may search the fleet, so the page shows the
# head of the queue and counts the rest.
SHOWN = 200
UNGUARANTEED = ""  # quota key of GPUs that count against no guarantee


@dataclass(frozen=True)
class Waiting:
    """One pending job at `position` (1: considered first). hidden: another workspace's;
    then only the position is set."""

    position: int
    hidden: bool = False
    job_id: str = ""
    name: str = ""
    workspace: str = ""
    kind: str = "job"  # job | endpoint (one of its replicas) | pod (its run)
    workload: str = ""  # the endpoint's or pod's name for those kinds, else the job's
    priority: int = 0
    replicas: int = 0
    gpus: int = 0  # per replica
    gpu_type: str | None = None
    submitted_at: float = 0.0
    reason: str | None = None  # the stored reason (the last round's, with supply notes)
    fits_now: bool = False  # the dry run places it: it starts at the next round
    never_fits: bool = False  # as asked it cannot fit on the ready fleet


@dataclass(frozen=True)
class QuotaUse:
    """GPUs of one workspace against one guarantee key ("*": any model; UNGUARANTEED:
    GPUs of `models` that count against no guarantee of the workspace)."""

    workspace: str
    key: str
    guaranteed: int
    used: int
    borrowed: int
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueFacts:
    waiting: list[Waiting]  # the head of the queue, in scheduling order
    pending: int  # pending jobs in all (every workspace)
    mine: int  # of which the visible workspaces' (all of them for a cluster admin)
    quotas: list[QuotaUse]
    quotas_set: bool  # False: no quota anywhere, nothing is checked and nothing borrowed


class QueueReader:
    """Reads the queue round after round at the cost of what changed, as the scheduler
    controller does: it keeps a SnapshotLoader and a Scheduler (whose index a round starts
    from) between reads. One read at a time (the pages' polls come from many threads);
    a read that fails starts the next from fresh ones, which give the same answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loader = SnapshotLoader()
        self._scheduler = Scheduler()

    def read(self, session: Session, now: float, visible: frozenset[str] | None) -> QueueFacts:
        with self._lock:
            try:
                snapshot = self._loader.load(session, now).snapshot
                return _facts(session, snapshot, self._scheduler.round(snapshot, now), visible)
            except BaseException:
                self._loader = SnapshotLoader()
                self._scheduler = Scheduler()
                raise


def queue(session: Session, now: float, visible: frozenset[str] | None) -> QueueFacts:
    """The queue from a fresh snapshot (a QueueReader keeps one between reads)."""
    snapshot = SnapshotLoader().load(session, now).snapshot
    return _facts(session, snapshot, Round(snapshot, now), visible)


def _facts(
    session: Session, snapshot: Snapshot, dry: Round, visible: frozenset[str] | None
) -> QueueFacts:
    quotas = _quota_use(dry, visible)  # before the dry run charges what it would place
    decisions = list(islice(dry.decisions(), SHOWN))
    rows = _job_rows(session, [d.job_id for d in decisions])
    pending = {j.id: j for j in snapshot.pending}
    shown: list[Waiting] = []
    for position, decision in enumerate(decisions, start=1):
        job = pending[decision.job_id]
        if visible is not None and job.workspace not in visible:
            shown.append(Waiting(position, hidden=True))
            continue
        name, reason, kind, workload = rows.get(job.id, (job.id, None, "job", job.id))
        shown.append(
            Waiting(
                position,
                job_id=job.id,
                name=name,
                workspace=job.workspace,
                kind=kind,
                workload=workload,
                priority=job.priority,
                replicas=job.replicas,
                gpus=job.demand.gpus,
                gpu_type=job.demand.gpu_type,
                submitted_at=job.submitted_at,
                reason=reason or decision.reason,
                fits_now=decision.outcome == Outcome.PLACED,
                never_fits=decision.outcome == Outcome.UNRESOLVABLE,
            )
        )
    mine = sum(1 for j in snapshot.pending if visible is None or j.workspace in visible)
    return QueueFacts(
        waiting=shown,
        pending=len(snapshot.pending),
        mine=mine,
        quotas=quotas,
        quotas_set=dry.quota.enabled,
    )


def _job_rows(session: Session, ids: list[str]) -> dict[str, tuple[str, str | None, str, str]]:
    """Job id -> (name, stored reason, kind, workload name)."""
    found: dict[str, tuple[str, str | None, str, str]] = {}
    rows: list[Row[str, str, str | None, str | None, str | None]] = []
    for chunk in in_chunks(ids):
        rows += session.execute(
            select(Job.id, Job.name, Job.reason, Job.endpoint_id, Job.pod_id).where(
                Job.id.in_(chunk)
            )
        ).all()
    endpoint_ids = {r.endpoint_id for r in rows if r.endpoint_id}
    pod_ids = {r.pod_id for r in rows if r.pod_id}
    endpoints = _names(session, Endpoint, endpoint_ids)
    pods = _names(session, Pod, pod_ids)
    for r in rows:
        if r.endpoint_id:
            found[r.id] = (r.name, r.reason, "endpoint", endpoints.get(r.endpoint_id, r.name))
        elif r.pod_id:
            found[r.id] = (r.name, r.reason, "pod", pods.get(r.pod_id, r.name))
        else:
            found[r.id] = (r.name, r.reason, "job", r.name)
    return found


def _names(session: Session, table: type[Endpoint] | type[Pod], ids: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for chunk in in_chunks(sorted(ids)):
        names.update(session.execute(select(table.id, table.name).where(table.id.in_(chunk))).all())
    return names


def _quota_use(dry: Round, visible: frozenset[str] | None) -> list[QuotaUse]:
    """Per workspace and guarantee key: guaranteed, counted against it, borrowed; GPUs
    counted against no guarantee on a row of their own."""
    book = dry.quota
    classes = dry.st.classes
    used: dict[tuple[str, str], int] = {}
    borrowed: dict[tuple[str, str], int] = {}
    models: dict[tuple[str, str], set[str]] = {}
    for h in dry.running.holdings.values():
        if not h.gpus or (visible is not None and h.workspace not in visible):
            continue
        lent = h.preemptible and book.is_borrowed(h)  # only preemptible jobs borrow
        for c, gpus in h.by_class:
            bucket = book.bucket(h.workspace, c)
            key = (h.workspace, UNGUARANTEED if bucket is None else bucket[1])
            if bucket is None:  # the book counts the rest (QuotaBook.used)
                used[key] = used.get(key, 0) + gpus
            if c is not None and 0 <= c < len(classes):
                models.setdefault(key, set()).add(classes[c].model)
            if lent:
                borrowed[key] = borrowed.get(key, 0) + gpus
    for (workspace, name), gpus in book.used.items():
        if visible is None or workspace in visible:
            used[(workspace, name)] = gpus
    keys = set(used) | set(borrowed)
    for workspace, guarantees in dry.snapshot.quotas.items():
        if visible is None or workspace in visible:
            keys |= {(workspace, name) for name, n in guarantees.items() if n > 0}
    out = []
    for workspace, name in sorted(keys):
        guaranteed = (
            0 if name == UNGUARANTEED else book.guarantee((workspace, name)) if book.enabled else 0
        )
        out.append(
            QuotaUse(
                workspace=workspace,
                key=name,
                guaranteed=guaranteed,
                used=used.get((workspace, name), 0),
                borrowed=borrowed.get((workspace, name), 0),
                models=tuple(sorted(models.get((workspace, name), ()))),
            )
        )
    return out
