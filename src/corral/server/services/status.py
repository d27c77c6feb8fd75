"""`GET /v1/status`: the cluster on one screen, in a few aggregate queries.

Fleet figures (node conditions, GPUs by model) are the same for everyone: they name no
workload. Work figures (jobs, endpoints, pending reasons) count only the workspaces the
caller may see; the per-workspace table is for cluster admins only.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.states import JobState, NodeCondition, ReplicaState
from corral.server.store.tables import (
    RETIRED_PREFIX,
    Endpoint,
    Job,
    Node,
    Pod,
    Replica,
    Workspace,
)
from corral.wire.api import (
    StatusGpus,
    StatusNodes,
    StatusReason,
    StatusView,
    StatusWork,
    StatusWorkspace,
)

TOP_REASONS = 5
_RUNNING = (JobState.STARTING, JobState.RUNNING, JobState.CANCELLING)


def status(session: Session, workspace: Workspace | None) -> StatusView:
    """workspace None: every workspace's work (a cluster admin's view)."""
    used = _used_gpus(session)
    return StatusView(
        scope="*" if workspace is None else workspace.name,
        nodes=_nodes(session),
        gpus=_gpus(session, used),
        work=_work(session, workspace),
        workspaces=[] if workspace is not None else _per_workspace(session),
    )


def _nodes(session: Session) -> StatusNodes:
    counts = dict(
        session.execute(
            select(Node.condition, func.count())
            .where(Node.name.not_like(f"{RETIRED_PREFIX}%"))
            .group_by(Node.condition)
        ).all()
    )
    return StatusNodes(
        total=sum(counts.values()),
        ready=counts.get(NodeCondition.READY, 0),
        cordoned=counts.get(NodeCondition.CORDONED, 0),
        unhealthy=counts.get(NodeCondition.UNHEALTHY, 0),
        lost=counts.get(NodeCondition.LOST, 0),
    )


def _used_gpus(session: Session) -> dict[str, set[int]]:
    used: dict[str, set[int]] = {}
    for node_id, gpus in session.execute(
        select(Replica.node_id, Replica.gpus).where(Replica.state.in_(ACTIVE_REPLICA_STATES))
    ):
        used.setdefault(node_id, set()).update(gpus)
    return used


def _gpus(session: Session, used: dict[str, set[int]]) -> list[StatusGpus]:
    total: Counter[str] = Counter()
    held: Counter[str] = Counter()
    free: Counter[str] = Counter()
    for node_id, condition, gpus in session.execute(
        select(Node.id, Node.condition, Node.gpus).where(Node.name.not_like(f"{RETIRED_PREFIX}%"))
    ):
        for gpu in gpus:
            model = str(gpu.get("model") or "unknown")
            total[model] += 1
            if gpu["index"] in used.get(node_id, ()):
                held[model] += 1
            elif condition == NodeCondition.READY and gpu.get("healthy", True):
                free[model] += 1
    return [StatusGpus(model=m, total=total[m], used=held[m], free=free[m]) for m in sorted(total)]


def _work(session: Session, workspace: Workspace | None) -> StatusWork:
    scope = [] if workspace is None else [Job.workspace_id == workspace.id]
    pod_scope = [] if workspace is None else [Pod.workspace_id == workspace.id]
    states = {
        str(state): int(n)
        for state, n in session.execute(
            select(Job.state, func.count())
            .where(Job.state.in_((JobState.PENDING, *_RUNNING)), *scope)
            .group_by(Job.state)
        )
    }
    count = func.count().label("n")
    reasons = [
        StatusReason(reason=str(reason), jobs=int(n))
        for reason, n in session.execute(
            select(func.coalesce(Job.reason, "waiting"), count)
            .where(Job.state == JobState.PENDING, *scope)
            .group_by(Job.reason)
            .order_by(count.desc())
            .limit(TOP_REASONS)
        )
    ]
    endpoints = select(func.count()).select_from(Endpoint).where(Endpoint.deleting.is_(False))
    if workspace is not None:
        endpoints = endpoints.where(Endpoint.workspace_id == workspace.id)
    ready = (
        select(func.count(func.distinct(Job.endpoint_id)))
        .join(Replica, and_(Replica.job_id == Job.id, Replica.attempt == Job.attempt))
        .where(
            Job.endpoint_id.is_not(None),
            Replica.state == ReplicaState.RUNNING,
            Replica.ready.is_(True),
            *scope,
        )
    )
    pods = select(Pod.job_id).where(Pod.desired == "running", *pod_scope)
    live = list(session.scalars(pods))
    pods_running = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.id.in_([j for j in live if j]), Job.state == JobState.RUNNING)
    )
    return StatusWork(
        pods=len(live),
        pods_running=pods_running or 0,
        running=sum(states.get(s, 0) for s in _RUNNING),
        pending=states.get(JobState.PENDING, 0),
        pending_reasons=reasons,
        endpoints=session.scalar(endpoints) or 0,
        endpoints_ready=session.scalar(ready) or 0,
    )


def _per_workspace(session: Session) -> list[StatusWorkspace]:
    names = dict(session.execute(select(Workspace.id, Workspace.name)).all())
    running: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for ws, state, n in session.execute(
        select(Job.workspace_id, Job.state, func.count())
        .where(Job.state.in_((JobState.PENDING, *_RUNNING)))
        .group_by(Job.workspace_id, Job.state)
    ):
        (pending if state == JobState.PENDING else running)[ws] += n
    gpus: Counter[str] = Counter()
    for ws, held in session.execute(
        select(Job.workspace_id, Replica.gpus)
        .join(Job, Replica.job_id == Job.id)
        .where(Replica.state.in_(ACTIVE_REPLICA_STATES))
    ):
        gpus[ws] += len(held)
    busy = set(running) | set(pending) | set(gpus)
    return [
        StatusWorkspace(
            name=names[ws], running=running[ws], pending=pending[ws], gpus_used=gpus[ws]
        )
        for ws in sorted(busy, key=lambda w: names.get(w, ""))
        if ws in names
    ]
