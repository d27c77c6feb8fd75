"""Liveness in the store: the facts core.liveness decides on, and its plan applied.

Each write checks again what the plan was decided on, inside the transaction: a node
heard from since the facts were read is not lost; a job that ended meanwhile is not
failed for its runtime; a recheck already done is not done twice.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from corral.core.liveness import (
    LivenessFacts,
    LivenessPlan,
    LostNode,
    NodeSilence,
    Overdue,
    RunningJob,
)
from corral.core.states import ACTIVE_REPLICA_STATES, JobState, NodeCondition, ReplicaState
from corral.server.services import recovery
from corral.server.services.effects import Effects
from corral.server.services.jobs import current_replicas, stop_replicas
from corral.server.services.settling import settle_job
from corral.server.services.specs import specs_by_id
from corral.server.store.tables import Job, Node, Replica

_STARTED = (JobState.STARTING, JobState.RUNNING)


def load(session: Session, now: float, lost_after_s: float, alive_since: float) -> LivenessFacts:
    nodes = tuple(
        NodeSilence(id, heard)
        for id, heard in session.execute(
            select(Node.id, Node.last_heartbeat_at).where(Node.condition != NodeCondition.LOST)
        )
    )
    started = session.execute(
        select(Job.id, Job.started_at).where(Job.state.in_(_STARTED), Job.started_at.is_not(None))
    ).all()
    # Every second, over every running job: two columns, and specs from the cache.
    specs = specs_by_id(session, [job_id for job_id, _ in started])
    running = tuple(
        RunningJob(job_id, at, None if (spec := specs.get(job_id)) is None else spec.max_runtime)
        for job_id, at in started
        if at is not None
    )
    recheck = tuple(
        session.scalars(select(Job.id).where(Job.recheck_at.is_not(None), Job.recheck_at <= now))
    )
    return LivenessFacts(nodes, running, recheck, lost_after_s, alive_since)


def record_heard(session: Session, heard: dict[str, float]) -> None:
    """When each node was last heard from, for many nodes in one statement. Not a state
    change: no version bump, so it never makes another writer's update stale."""
    if heard:
        session.execute(
            update(Node.__table__)  # type: ignore[arg-type]
            .where(Node.__table__.c.id == bindparam("node"))
            .values(last_heartbeat_at=bindparam("at")),
            # In id order, as every writer locks node rows (no deadlock on PostgreSQL).
            [{"node": node, "at": heard[node]} for node in sorted(heard)],
        )


def apply_plan(
    session: Session, plan: LivenessPlan, heard: dict[str, float], now: float
) -> Effects:
    """Every field of the plan, each write checked again (below)."""
    record_heard(session, heard)
    effects = Effects()
    for lost in plan.lost:
        effects.merge(mark_lost(session, lost, now))
    for overdue in plan.overdue:
        effects.merge(stop_overdue(session, overdue, now))
    for job_id in plan.recheck:
        effects.merge(recheck(session, job_id, now))
    return effects


def mark_lost(session: Session, lost: LostNode, now: float) -> Effects:
    """The node is lost, and its replicas with it, if it is still silent."""
    effects = Effects()
    node = session.scalar(
        select(Node)
        .where(
            Node.id == lost.id,
            Node.condition != NodeCondition.LOST,
            Node.last_heartbeat_at.is_(None) | (Node.last_heartbeat_at < lost.cutoff),
        )
        .with_for_update()
    )
    if node is None:
        return effects  # heard from since, or lost already
    node.condition = NodeCondition.LOST
    node.connected = False
    replicas = session.scalars(
        select(Replica).where(Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
    ).all()
    jobs: set[str] = set()
    for replica in replicas:
        replica.state = ReplicaState.LOST
        replica.finished_at = now
        replica.reason = f"node {node.name} lost (no heartbeat for {lost.silent_s:.0f}s)"
        jobs.add(replica.job_id)
    session.flush()
    for job_id in sorted(jobs):
        job = session.get(Job, job_id)
        if job is not None:
            effects.merge(settle_job(session, job, now))
    return effects


def stop_overdue(session: Session, overdue: Overdue, now: float) -> Effects:
    """Fail a job that ran past its max_runtime (backfill relies on the limit)."""
    job = session.scalar(
        select(Job).where(Job.id == overdue.job_id, Job.state.in_(_STARTED)).with_for_update()
    )
    if job is None:
        return Effects()  # ended meanwhile
    job.state = JobState.FAILED
    job.finished_at = now
    job.reason = f"exceeded its max_runtime of {overdue.max_runtime_s:g}s; stopped"
    recovery.close_attempt(session, job, now, None, job.reason)
    effects = stop_replicas(current_replicas(session, job))
    effects.wake_scheduler = True
    return effects


def recheck(session: Session, job_id: str, now: float) -> Effects:
    """Decide again about a job that asked for it: a possible hang, a failure being
    attributed, an elastic job waiting for a replacement node."""
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.recheck_at.is_not(None), Job.recheck_at <= now)
        .with_for_update()
    )
    if job is None:
        return Effects()
    job.recheck_at = None
    if job.state in _STARTED:
        return settle_job(session, job, now)
    if job.state == JobState.PENDING:
        return recovery.replan_waiting(session, job, now)
    return Effects()
