"""Settling jobs: moving a job on from what its current attempt's replicas say, deciding
again about jobs that asked for it, and stopping jobs past their max_runtime."""

from __future__ import annotations

from sqlalchemy.orm import Session

from corral.core.lifecycle import JobDecision, JobFacts, ReplicaFacts, decide_job
from corral.core.recovery import Cause, Decision, Verdict
from corral.core.states import JobState, ReplicaState
from corral.server.services import recovery
from corral.server.services.effects import Effects
from corral.server.services.jobs import current_replicas, node_names, stop_replicas
from corral.server.services.specs import job_spec
from corral.server.store.tables import Job, Replica


def settle_job(session: Session, job: Job, now: float) -> Effects:
    """Move the job on from what its current attempt's replicas say (idempotent): the store
    loads the facts, core decides (core.recovery first, then core.lifecycle), and the
    appliers below write every field of the decision."""
    replicas = current_replicas(session, job)
    if (
        job.state in _RUNNING
        and replicas
        and not all(r.state == ReplicaState.SUCCEEDED for r in replicas)
        and _needs_recovery(job, replicas, now)
    ):
        decided = recovery.decide_attempt(session, job, replicas, now)
        effects = apply_recovery(session, job, replicas, decided, now)
        if decided.verdict is not Verdict.CONTINUE:
            return effects
    facts = JobFacts(job.state, job.attempt, job.restarts, job_spec(job).max_restarts)
    # Node names only show in the reason for a lost replica: the usual report skips the read.
    lost = {r.node_id for r in replicas if r.state == ReplicaState.LOST}
    names = node_names(session, lost)
    decision = decide_job(
        facts,
        [
            ReplicaFacts(r.rank, r.state, r.exit_code, names.get(r.node_id), r.reason)
            for r in replicas
        ],
    )
    return apply_job_decision(session, job, replicas, decision, now)


_RUNNING = (JobState.STARTING, JobState.RUNNING)


def apply_job_decision(
    session: Session, job: Job, replicas: list[Replica], decision: JobDecision, now: float
) -> Effects:
    """Write core.lifecycle's decision about the job: every field of it."""
    effects = Effects()
    if decision.stop_replicas:
        effects.merge(stop_replicas(replicas))
    if decision.state == job.state and decision.reason is None:
        return effects
    job.state = decision.state
    if decision.reason is not None or decision.state != JobState.PENDING:
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
    if decision.state == JobState.PENDING:
        effects.wake_scheduler = True
    return effects


def _needs_recovery(job: Job, replicas: list[Replica], now: float) -> bool:
    """Whether core.recovery has anything to say. The common case — a replica reporting that
    it runs — must not pay for a look at the whole cluster."""
    if any(r.state in _ENDED for r in replicas):
        return True
    if job.recheck_at is not None:
        return job.recheck_at <= now
    # A hang is only seen by looking again later: the first look sets when.
    return job_spec(job).progress_timeout is not None


_ENDED = (ReplicaState.FAILED, ReplicaState.LOST, ReplicaState.STOPPED)


def apply_recovery(
    session: Session, job: Job, replicas: list[Replica], decision: Decision, now: float
) -> Effects:
    """Write core.recovery's decision about a running attempt: every field of it. CONTINUE
    keeps the memory and when to look again (a hang is only seen by looking again), and
    leaves the job to core.lifecycle."""
    verdict = decision.verdict
    recovery.remember(job, decision.memory)
    job.recheck_at = decision.recheck_at
    if verdict is Verdict.CONTINUE:
        return Effects()
    effects = stop_replicas(replicas) if decision.stop_replicas else Effects()
    job.reason = decision.reason  # it names the nodes cordoned, if any
    recovery.cordon(session, decision.cordon, job, decision.reason)
    if verdict is Verdict.HOLD:
        return effects
    recovery.close_attempt(session, job, now, decision.cause, decision.reason)
    if decision.cause is Cause.USER_ERROR and verdict is not Verdict.GIVE_UP:
        job.restarts += 1  # a restart that happens, not the failure that ends the job
    if verdict is Verdict.GIVE_UP:
        job.state = JobState.FAILED
        failed = [r for r in replicas if r.state == ReplicaState.FAILED and r.exit_code is not None]
        job.exit_code = min(failed, key=lambda r: r.rank).exit_code if failed else None
        job.finished_at = now
        job.recheck_at = None
        return effects
    # RESTART or WAIT: queued again; the scheduler places it when (and where) it fits.
    job.state = JobState.PENDING
    size = job_spec(job).replicas
    job.next_replicas = (
        decision.replicas if decision.replicas is not None and decision.replicas != size else None
    )
    effects.wake_scheduler = True
    return effects
