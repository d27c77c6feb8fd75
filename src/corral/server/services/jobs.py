"""Job use cases: submit, read, cancel, delete, logs; settling a job when its replicas change."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.core import recovery as core_recovery
from corral.core.lifecycle import ACTIVE_REPLICA_STATES, JobFacts, ReplicaFacts, decide_job
from corral.server.api.errors import ApiError, not_found
from corral.server.services import recovery
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.services.names import generate_job_name
from corral.server.services.snapshot import job_spec, specs_by_id
from corral.server.store.tables import Endpoint, Job, LogChunk, Node, Replica, Workspace
from corral.spec.job import JobSpec
from corral.wire.api import TERMINAL_JOB_STATES, JobView, LogPage, ReplicaView

LOG_TAIL_LINES = 20
LOG_PAGE_BYTES = 1 << 20


def submit_job(
    session: Session,
    workspace: Workspace,
    spec: JobSpec,
    now: float,
    checkpoint_root: str | None = None,
    *,
    flush: bool = True,
) -> Job:
    """Store a new pending job. `flush=False` leaves the INSERT to the commit (a group
    commit writes a batch's jobs in one statement); the caller then turns an IntegrityError
    from the commit (the name taken meanwhile) into a 409 itself."""
    name = spec.name
    for _ in range(5):
        name = spec.name or generate_job_name()
        # On the connection, not through the ORM: no autoflush (what this batch added so far
        # is written at commit) and less work per call.
        state = (
            session.connection()
            .execute(_STATE_BY_NAME, {"ws": workspace.id, "name": name})
            .scalar()
        )
        if state is None:
            break
        if spec.name:
            raise ApiError(
                409,
                "conflict",
                f"job '{name}' already exists in workspace '{workspace.name}' (it is "
                f"{state}); choose another name or delete it with "
                f"`corral job delete {name}`",
            )
    assert name is not None
    stored = spec.model_copy(update={"name": name, "workspace": workspace.name})
    job = Job(
        id=new_id(),
        workspace_id=workspace.id,
        name=name,
        spec=stored.model_dump(mode="json"),
        state="pending",
        priority=spec.priority,
        attempt=0,
        restarts=0,
        preemptions=0,
        borrowed=False,
        checkpoint_dir=spec.checkpoint_dir
        or (f"{checkpoint_root.rstrip('/')}/{workspace.name}/{name}" if checkpoint_root else None),
        recovery={},
        submitted_at=now,
        reason="waiting for the scheduler",
    )
    session.add(job)
    if not flush:
        return job
    try:
        session.flush()
    except IntegrityError:
        raise name_taken(name, workspace.name) from None
    return job


def name_taken(name: str, workspace: str) -> ApiError:
    return ApiError(409, "conflict", f"job '{name}' already exists in workspace '{workspace}'")


# Built once: every submission runs it.
_STATE_BY_NAME = select(Job.state).where(
    Job.workspace_id == bindparam("ws"), Job.name == bindparam("name")
)


def _job_by_name(session: Session, workspace_id: str, name: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.workspace_id == workspace_id, Job.name == name)
    ).first()


def get_job(session: Session, workspace: Workspace, name: str) -> Job:
    job = _job_by_name(session, workspace.id, name)
    if job is None:
        raise not_found(f"job '{name}' in workspace '{workspace.name}'")
    return job


_CURRENT = (
    select(Replica)
    .where(Replica.job_id == bindparam("job"), Replica.attempt == bindparam("attempt"))
    .order_by(Replica.rank)
)


# session.info key: (job id, attempt) -> its replicas by rank, when a caller loaded them for
# the whole session (nodes.warm_reports) and nothing adds replicas in it.
CURRENT_REPLICAS = "corral.current_replicas"


def current_replicas(session: Session, job: Job) -> list[Replica]:
    loaded = session.info.get(CURRENT_REPLICAS)
    if loaded is not None and (job.id, job.attempt) in loaded:
        return list(loaded[(job.id, job.attempt)])
    return list(session.scalars(_CURRENT, {"job": job.id, "attempt": job.attempt}))


def job_view(
    session: Session,
    job: Job,
    workspace: str,
    *,
    with_tail: bool = True,
    now: float | None = None,
) -> JobView:
    replicas = current_replicas(session, job) if job.attempt else []
    attempts, goodput = (
        recovery.attempt_views(session, job, now if now is not None else job.submitted_at)
        if with_tail and job.attempt  # no attempt yet: no rows to read
        else ([], None)
    )
    nodes = _node_names(session, {r.node_id for r in replicas})
    tail: list[str] = []
    if with_tail and job.state == "failed":
        failed = [r for r in replicas if r.state == "failed"] or replicas
        if failed:
            tail = log_tail(session, failed[0].id)
    return JobView(
        name=job.name,
        workspace=workspace,
        state=job.state,
        spec=job_spec(job),
        attempt=job.attempt,
        restarts=job.restarts,
        preemptions=job.preemptions,
        borrowed=job.borrowed,
        exit_code=job.exit_code,
        reason=job.reason,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        replicas=[_replica_view(r, nodes.get(r.node_id)) for r in replicas],
        log_tail=tail,
        step=max((r.step for r in replicas if r.step is not None), default=None),
        checkpoint_step=max(
            (a.checkpoint_step for a in attempts if a.checkpoint_step is not None), default=None
        ),
        attempts=attempts,
        goodput=goodput,
        endpoint=None
        if job.endpoint_id is None
        else session.scalar(select(Endpoint.name).where(Endpoint.id == job.endpoint_id)),
    )


def list_jobs(session: Session, workspace: Workspace) -> list[JobView]:
    jobs = session.scalars(
        select(Job).where(Job.workspace_id == workspace.id).order_by(Job.submitted_at)
    ).all()
    return [job_view(session, job, workspace.name, with_tail=False) for job in jobs]


def _node_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return dict(session.execute(select(Node.id, Node.name).where(Node.id.in_(ids))).all())


def _replica_view(replica: Replica, node: str | None) -> ReplicaView:
    return ReplicaView(
        id=replica.id,
        rank=replica.rank,
        attempt=replica.attempt,
        node=node,
        gpus=list(replica.gpus),
        state=replica.state,
        exit_code=replica.exit_code,
        pid=replica.pid,
        assigned_at=replica.created_at,
        step=replica.step,
        started_at=replica.started_at,
        finished_at=replica.finished_at,
        reason=replica.reason,
    )


def log_tail(session: Session, replica_id: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    chunks = session.scalars(
        select(LogChunk.data)
        .where(LogChunk.replica_id == replica_id)
        .order_by(LogChunk.offset.desc())
        .limit(16)
    ).all()
    text = "".join(reversed(chunks))
    return text.rstrip("\n").split("\n")[-lines:] if text else []


def cancel_job(session: Session, job: Job, now: float) -> Effects:
    effects = Effects()
    if job.state in TERMINAL_JOB_STATES or job.state == "cancelling":
        return effects
    replicas = [r for r in current_replicas(session, job) if r.state in ACTIVE_REPLICA_STATES]
    if job.state == "pending" and not replicas:
        job.state = "cancelled"
        job.reason = "cancelled by user"
        job.finished_at = now
        return effects
    job.state = "cancelling"
    job.reason = "stopping its replicas"
    job.recheck_at = None
    recovery.close_attempt(session, job, now, None, "cancelled by user")
    effects.merge(_stop(replicas))
    if not replicas:
        job.state = "cancelled"
        job.finished_at = now
        job.reason = "cancelled by user"
    return effects


def _stop(replicas: list[Replica]) -> Effects:
    effects = Effects()
    for replica in replicas:
        if replica.state in ACTIVE_REPLICA_STATES and replica.desired != "stop":
            replica.desired = "stop"
            effects.sync_nodes.add(replica.node_id)
    return effects


def stop_overdue_jobs(session: Session, now: float) -> Effects:
    """Fail jobs that ran past their spec's max_runtime (backfill relies on the limit)."""
    effects = Effects()
    started = session.execute(
        select(Job.id, Job.started_at).where(
            Job.state.in_(("starting", "running")), Job.started_at.is_not(None)
        )
    ).all()
    # Every second, over every running job: read two columns, and specs from the cache.
    limits = specs_by_id(session, [job_id for job_id, _ in started])
    overdue = []
    for job_id, started_at in started:
        spec = limits.get(job_id)
        limit = None if spec is None else spec.max_runtime
        if limit is not None and started_at is not None and now >= started_at + limit:
            overdue.append(job_id)
    # The state again: under READ COMMITTED a job may have ended since the first read.
    running = Job.state.in_(("starting", "running"))
    for job in session.scalars(select(Job).where(Job.id.in_(overdue), running)) if overdue else ():
        limit = job_spec(job).max_runtime
        job.state = "failed"
        job.finished_at = now
        job.reason = f"exceeded its max_runtime of {limit:g}s; stopped"
        recovery.close_attempt(session, job, now, None, job.reason)
        effects.merge(_stop(current_replicas(session, job)))
        effects.wake_scheduler = True
    return effects


def delete_job(session: Session, job: Job) -> None:
    if job.state not in TERMINAL_JOB_STATES:
        raise ApiError(
            409,
            "conflict",
            f"job '{job.name}' is {job.state}; cancel it first (`corral job cancel {job.name}`)",
        )
    active = session.scalar(
        select(func.count())
        .select_from(Replica)
        .where(Replica.job_id == job.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
    )
    if active:
        raise ApiError(
            409,
            "conflict",
            f"job '{job.name}' still has {active} replica(s) stopping; try again in a few seconds",
        )
    replica_ids = select(Replica.id).where(Replica.job_id == job.id)
    session.execute(delete(LogChunk).where(LogChunk.replica_id.in_(replica_ids)))
    session.execute(delete(Replica).where(Replica.job_id == job.id))
    session.delete(job)


def read_logs(
    session: Session, job: Job, rank: int, offset: int, attempt: int | None = None
) -> LogPage:
    attempt = attempt or job.attempt
    if rank < 0 or rank >= job_spec(job).replicas:
        raise ApiError(404, "not_found", f"job '{job.name}' has no replica {rank}")
    replica = session.scalars(
        select(Replica).where(
            Replica.job_id == job.id, Replica.attempt == attempt, Replica.rank == rank
        )
    ).first()
    if replica is None:
        # Not started yet (or the attempt is unknown): nothing to read; complete if finished.
        done = job.state in TERMINAL_JOB_STATES
        return LogPage(
            replica=rank, attempt=attempt, data="", offset=offset, next_offset=offset, complete=done
        )
    chunks = session.execute(
        select(LogChunk.offset, LogChunk.nbytes, LogChunk.data)
        .where(LogChunk.replica_id == replica.id, LogChunk.offset >= offset)
        .order_by(LogChunk.offset)
    )
    parts: list[str] = []
    next_offset = offset
    size = 0
    for chunk_offset, nbytes, data in chunks:
        if size and size + nbytes > LOG_PAGE_BYTES:
            break
        parts.append(data)
        next_offset = chunk_offset + nbytes
        size += nbytes
    terminal = replica.state not in ACTIVE_REPLICA_STATES
    all_here = replica.log_bytes is None or replica.received_bytes >= replica.log_bytes
    complete = terminal and all_here and next_offset >= replica.received_bytes
    return LogPage(
        replica=rank,
        attempt=attempt,
        data="".join(parts),
        offset=offset,
        next_offset=next_offset,
        complete=complete,
    )


def settle_job(session: Session, job: Job, now: float) -> Effects:
    """Move the job on from what its current attempt's replicas say (idempotent)."""
    replicas = current_replicas(session, job)
    if (
        job.state in ("starting", "running")
        and replicas
        and not all(r.state == "succeeded" for r in replicas)
        and _needs_recovery(job, replicas, now)
    ):
        effects = _recover(session, job, replicas, now)
        if effects is not None:
            return effects
    facts = JobFacts(job.state, job.attempt, job.restarts, job_spec(job).max_restarts)
    # Node names only show in the reason for a lost replica: the usual report skips the read.
    lost = {r.node_id for r in replicas if r.state == "lost"}
    names = _node_names(session, lost)
    decision = decide_job(
        facts,
        [
            ReplicaFacts(r.rank, r.state, r.exit_code, names.get(r.node_id), r.reason)
            for r in replicas
        ],
    )
    effects = Effects()
    if decision.stop_replicas:
        effects.merge(_stop(replicas))
    if decision.state == job.state and decision.reason is None:
        return effects
    job.state = decision.state
    if decision.reason is not None or decision.state != "pending":
        job.reason = decision.reason
    if decision.exit_code is not None:
        job.exit_code = decision.exit_code
    if decision.count_restart:
        job.restarts += 1
    if decision.mark_started and job.started_at is None:
        job.started_at = now
    if decision.mark_finished:
        job.finished_at = now
        job.recheck_at = None
        recovery.close_attempt(session, job, now, None, decision.reason)
        if job.started_at is None:
            starts = [r.started_at for r in replicas if r.started_at is not None]
            job.started_at = min(starts, default=None)
    if decision.state == "pending":
        effects.wake_scheduler = True
    return effects


def _needs_recovery(job: Job, replicas: list[Replica], now: float) -> bool:
    """Whether core.recovery has anything to say. The common case — a replica reporting that
    it runs — must not pay for a look at the whole cluster."""
    if any(r.state in ("failed", "lost", "stopped") for r in replicas):
        return True
    if job.recheck_at is not None:
        return job.recheck_at <= now
    # A hang is only seen by looking again later: the first look sets when.
    return job_spec(job).progress_timeout is not None


def _recover(session: Session, job: Job, replicas: list[Replica], now: float) -> Effects | None:
    """Apply core.recovery to a running attempt; None when nothing is wrong with it."""
    decision, _ = recovery.decide_attempt(session, job, replicas, now)
    verdict = decision.verdict
    spec = job_spec(job)
    if verdict is core_recovery.Verdict.CONTINUE:
        # A hang is only seen by looking again: come back when it would become one.
        job.recheck_at = _hang_check_at(spec, replicas, job, now)
        return None
    recovery.remember(job, decision)
    effects = _stop(replicas) if decision.stop_replicas else Effects()
    if verdict is core_recovery.Verdict.HOLD:
        job.reason = decision.reason
        job.recheck_at = decision.recheck_at
        return effects
    recovery.close_attempt(session, job, now, decision.cause, decision.reason)
    if decision.cause is core_recovery.Cause.USER_ERROR:
        job.restarts += 1
    job.reason = decision.reason
    if verdict is core_recovery.Verdict.GIVE_UP:
        job.state = "failed"
        failed = [r for r in replicas if r.state == "failed" and r.exit_code is not None]
        job.exit_code = min(failed, key=lambda r: r.rank).exit_code if failed else None
        job.finished_at = now
        job.recheck_at = None
        return effects
    # RESTART or WAIT: queued again; the scheduler places it when (and where) it fits.
    job.state = "pending"
    job.next_replicas = (
        decision.replicas
        if decision.replicas is not None and decision.replicas != spec.replicas
        else None
    )
    job.recheck_at = decision.recheck_at
    effects.wake_scheduler = True
    return effects


def _hang_check_at(spec: JobSpec, replicas: list[Replica], job: Job, now: float) -> float | None:
    """When the attempt would count as hung if no replica reports a new step before then."""
    if spec.progress_timeout is None:
        return None
    started = min(r.created_at for r in replicas)
    running = [r for r in replicas if r.state == "running"]
    last = min((r.progress_at or started for r in running), default=now)
    return max(now, last + spec.progress_timeout)


def recheck_jobs(session: Session, now: float) -> Effects:
    """Decide again about jobs that asked for it: a possible hang, a failure being
    attributed, an elastic job waiting for a replacement node."""
    effects = Effects()
    for job in session.scalars(
        select(Job).where(Job.recheck_at.is_not(None), Job.recheck_at <= now)
    ):
        job.recheck_at = None
        if job.state in ("starting", "running"):
            effects.merge(settle_job(session, job, now))
        elif job.state == "pending":
            effects.merge(recovery.replan_waiting(session, job, now))
    return effects
