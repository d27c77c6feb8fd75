"""Apply a placement plan to the store (services/snapshot.py loads what it is made from)."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.placement import GangPlacement, PlacementPlan, Preemption
from corral.core.recovery import Cause
from corral.core.states import Desired, JobState, NodeCondition, ReplicaState
from corral.server.services import recovery
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.services.snapshot import Loaded
from corral.server.store.db import in_chunks
from corral.server.store.tables import Attempt, Job, Node, Replica


def apply_plan(session: Session, plan: PlacementPlan, loaded: Loaded, now: float) -> Effects:
    """Store the plan. A job changed since the snapshot (cancelled, say) is skipped; a node
    that is no longer ready and connected voids the whole plan (StaleDataError: nothing
    is written, and the next round plans again without it)."""
    _guard_nodes(session, {r.node_id for g in plan.placements for r in g.replicas})
    effects = Effects()
    jobs = loaded.jobs
    versions = {p.job_id: jobs[p.job_id].version for p in plan.preemptions if p.job_id in jobs}
    # Victims first: a placement may take their GPUs, and its replicas are only sent to
    # the node once the victim's replicas there have exited (see assignments).
    preempted = {p.job_id for p in plan.preemptions if _preempt(session, p, versions, effects, now)}
    gangs = [g for g in plan.placements if g.job_id not in preempted]
    for gang in _claim(session, gangs, loaded, now):
        effects.sync_nodes |= {r.node_id for r in gang.replicas}
    # Only reasons that changed are written, all in one statement: most rounds leave most
    # of a long queue waiting for the same reason as before.
    changed = [
        {"job": job_id, "v": jobs[job_id].version, "reason": reason}
        for job_id, reason in plan.pending_reasons.items()
        if jobs[job_id].reason != reason
    ]
    if changed:
        session.connection().execute(_REASON, changed)
    return effects


def _guard_nodes(session: Session, node_ids: set[str]) -> None:
    """Every node receiving a placement is still as the snapshot saw it: ready and
    connected. Its row stays locked until the commit, so that a node marked lost (or
    cordoned) meanwhile waits for the placement to be stored and then sees its replicas
    (PostgreSQL: FOR SHARE; SQLite holds the write lock since BEGIN IMMEDIATE). Locked
    before the jobs, as the other writers that change both (liveness) lock them."""
    if not node_ids:
        return
    usable: set[str] = set()
    for chunk in in_chunks(sorted(node_ids)):
        for node_id, condition, connected in session.connection().execute(_NODES, {"ids": chunk}):
            if condition == NodeCondition.READY and connected:
                usable.add(node_id)
    gone = sorted(node_ids - usable)
    if gone:
        raise StaleDataError(
            f"{len(gone)} node(s) of the plan are no longer ready and connected "
            f"({', '.join(gone[:5])}): the plan is void, the next round plans again"
        )


# Built once (a round claims many jobs; building statements cost more than running them).
_NODES = (
    select(Node.id, Node.condition, Node.connected)
    .where(Node.id.in_(bindparam("ids", expanding=True)))
    .order_by(Node.id)  # rows locked in one order by every writer: no deadlock
    .with_for_update(read=True)
)
# FOR UPDATE (PostgreSQL): nobody changes the rows between this read and the writes;
# SQLite's write lock, held since BEGIN IMMEDIATE, already does that.
_CLAIMABLE = (
    select(Job.id, Job.version, Job.state)
    .where(Job.id.in_(bindparam("ids", expanding=True)))
    .order_by(Job.id)  # rows locked in one order by every writer: no deadlock
    .with_for_update()
)
_JOBS = Job.__table__
_REASON = (
    update(_JOBS)  # type: ignore[arg-type]
    .where(
        _JOBS.c.id == bindparam("job"),
        _JOBS.c.version == bindparam("v"),
        _JOBS.c.state == JobState.PENDING,
    )
    .values(reason=bindparam("reason"), version=_JOBS.c.version + 1)
)
_START = (
    update(_JOBS)  # type: ignore[arg-type]
    .where(_JOBS.c.id == bindparam("job"))
    .values(
        state=JobState.STARTING,
        attempt=bindparam("attempt"),
        master_port=bindparam("port"),
        reason=None,
        recheck_at=None,
        borrowed=bindparam("borrowed"),
        version=bindparam("next_version"),
    )
)


def _claim(
    session: Session, gangs: list[GangPlacement], loaded: Loaded, now: float
) -> list[GangPlacement]:
    """Move each job still as the snapshot saw it to `starting`, with its attempt and its
    replicas; returns the gangs claimed. A round places hundreds of jobs: this is a few
    statements for all of them, not a few each."""
    jobs = loaded.jobs
    seen: dict[str, tuple[int, str]] = {}
    for chunk in in_chunks(sorted(g.job_id for g in gangs)):
        rows = session.connection().execute(_CLAIMABLE, {"ids": chunk})
        seen.update((job_id, (version, state)) for job_id, version, state in rows)
    claimed = [g for g in gangs if seen.get(g.job_id) == (jobs[g.job_id].version, JobState.PENDING)]
    if not claimed:
        return []
    session.connection().execute(
        _START,
        [
            {
                "job": g.job_id,
                "attempt": jobs[g.job_id].attempt + 1,
                "port": g.master_port,
                "borrowed": g.borrowed,
                "next_version": jobs[g.job_id].version + 1,
            }
            for g in claimed
        ],
    )
    attempts: list[dict[str, object]] = []
    replicas: list[dict[str, object]] = []
    for g in claimed:
        attempt = jobs[g.job_id].attempt + 1
        attempts.append(recovery.attempt_row(session, g.job_id, attempt, len(g.replicas), now))
        res = loaded.specs[g.job_id].resources
        replicas.extend(
            {
                "id": new_id(),
                "job_id": g.job_id,
                "attempt": attempt,
                "rank": placed.rank,
                "node_id": placed.node_id,
                "gpus": list(placed.gpus),
                "cpus": res.cpus,
                "memory_mb": res.memory,
                "disk_mb": res.disk,
                "state": ReplicaState.ASSIGNED,
                "desired": Desired.RUN,
                "created_at": now,
                "received_bytes": 0,
                "version": 1,
            }
            for placed in g.replicas
        )
    # Core inserts (the ORM's bulk path costs more, and nothing here needs its objects).
    session.execute(insert(Attempt.__table__), attempts)  # type: ignore[arg-type]
    session.execute(insert(Replica.__table__), replicas)  # type: ignore[arg-type]
    return claimed


_RUNNING = (JobState.STARTING, JobState.RUNNING)


def _preempt(
    session: Session,
    preemption: Preemption,
    versions: dict[str, int],
    effects: Effects,
    now: float,
) -> bool:
    """Stop the victim's current attempt and queue it again; False if it changed meanwhile."""
    job = session.get(Job, preemption.job_id)
    version = versions.get(preemption.job_id)
    if job is None or job.version != version or job.state not in _RUNNING:
        return False
    # The scheduler knows jobs by id; a user knows them by name.
    for_job = session.get(Job, preemption.for_job_id)
    reason = preemption.reason
    if for_job is not None:
        reason = reason.replace(preemption.for_job_id, f"job '{for_job.name}'")
    requeue(session, job, Cause.PREEMPTED, reason, now, effects)
    return True


def requeue(
    session: Session,
    job: Job,
    cause: Cause,
    reason: str,
    now: float,
    effects: Effects,
    *,
    count_preemption: bool = True,
) -> None:
    """End the job's current attempt (`cause`, not charged to max_restarts) and queue it
    again: it resumes from its last checkpoint wherever it is placed next."""
    replicas = session.scalars(
        select(Replica).where(
            Replica.job_id == job.id,
            Replica.attempt == job.attempt,
            Replica.state.in_(ACTIVE_REPLICA_STATES),
        )
    ).all()
    for replica in replicas:
        replica.desired = Desired.STOP
        replica.reason = reason
        effects.sync_nodes.add(replica.node_id)
    recovery.close_attempt(session, job, now, cause, reason)
    job.state = JobState.PENDING
    if count_preemption:
        job.preemptions += 1
    job.borrowed = False
    job.reason = f"attempt {job.attempt} {reason}; queued again"
    effects.wake_scheduler = True
