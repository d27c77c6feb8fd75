"""What a job's state becomes, given its replicas' states. Pure.

A replica's terminal state is decided where its exit is reported (`replica_outcome`); the
job's follows from all of its current attempt's replicas (`decide_job`).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.states import (
    ACTIVE_REPLICA_STATES,
    LIVE_JOB_STATES,
    Desired,
    JobState,
    ReplicaState,
)

__all__ = ["ACTIVE_REPLICA_STATES", "LIVE_JOB_STATES", "JobDecision", "decide_job"]

_SETTLED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PENDING)


def replica_outcome(desired: str, exit_code: int | None) -> ReplicaState:
    """The terminal state of a replica that exited."""
    if desired == Desired.STOP:
        return ReplicaState.STOPPED
    return ReplicaState.SUCCEEDED if exit_code == 0 else ReplicaState.FAILED


@dataclass(frozen=True)
class ReplicaFacts:
    rank: int
    state: str
    exit_code: int | None = None
    node: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JobFacts:
    state: str
    attempt: int
    restarts: int
    max_restarts: int


@dataclass(frozen=True)
class JobDecision:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    stop_replicas: bool = False  # set the attempt's still-active replicas to desired=stop
    count_restart: bool = False
    mark_started: bool = False
    mark_finished: bool = False

    @staticmethod
    def keep(job: JobFacts) -> JobDecision:
        return JobDecision(state=JobState(job.state))


def decide_job(job: JobFacts, replicas: list[ReplicaFacts]) -> JobDecision:
    if job.state in _SETTLED or not replicas:
        return JobDecision.keep(job)
    active = [r for r in replicas if r.state in ACTIVE_REPLICA_STATES]
    if job.state == JobState.CANCELLING:
        if active:
            return JobDecision.keep(job)
        return JobDecision(JobState.CANCELLED, reason="cancelled by user", mark_finished=True)

    lost = sorted((r for r in replicas if r.state == ReplicaState.LOST), key=lambda r: r.rank)
    failed = sorted((r for r in replicas if r.state == ReplicaState.FAILED), key=lambda r: r.rank)
    if lost:
        # An infrastructure failure is not the job's fault: end the attempt and queue again.
        first = lost[0]
        why = first.reason or f"node {first.node} was lost"
        return JobDecision(
            JobState.PENDING,
            reason=f"attempt {job.attempt} ended: replica {first.rank}: {why}; queued again",
            stop_replicas=True,
        )
    if failed:
        first = failed[0]
        code = first.exit_code
        why = f"replica {first.rank} exited with code {code}"
        if first.reason:
            why = f"replica {first.rank}: {first.reason}"
        if job.restarts < job.max_restarts:
            return JobDecision(
                JobState.PENDING,
                reason=f"attempt {job.attempt} failed: {why}; restart "
                f"{job.restarts + 1} of {job.max_restarts}",
                stop_replicas=True,
                count_restart=True,
            )
        return JobDecision(
            JobState.FAILED, exit_code=code, reason=why, stop_replicas=True, mark_finished=True
        )
    if all(r.state == ReplicaState.SUCCEEDED for r in replicas):
        return JobDecision(JobState.SUCCEEDED, exit_code=0, mark_finished=True)
    started = (ReplicaState.RUNNING, ReplicaState.SUCCEEDED)
    if job.state == JobState.STARTING and all(r.state in started for r in replicas):
        return JobDecision(JobState.RUNNING, mark_started=True)
    return JobDecision.keep(job)
