"""What a job's state becomes, given its replicas' states. Pure.

A replica's terminal state is decided where its exit is reported (`replica_outcome`); the
job's follows from all of its current attempt's replicas (`decide_job`).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.states import (
    ACTIVE_REPLICA_STATES,
    LIVE_JOB_STATES,
)

__all__ = ["ACTIVE_REPLICA_STATES", "LIVE_JOB_STATES", "JobDecision", "decide_job"]


def replica_outcome(desired: str, exit_code: int | None) -> str:
    """The terminal state of a replica that exited."""
    if desired == "stop":
        return "stopped"
    return "succeeded" if exit_code == 0 else "failed"


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
    state: str
    exit_code: int | None = None
    reason: str | None = None
    stop_replicas: bool = False  # set the attempt's still-active replicas to desired=stop
    count_restart: bool = False
    mark_started: bool = False
    mark_finished: bool = False

    @staticmethod
    def keep(job: JobFacts) -> JobDecision:
        return JobDecision(state=job.state)


def decide_job(job: JobFacts, replicas: list[ReplicaFacts]) -> JobDecision:
    if job.state in ("succeeded", "failed", "cancelled", "pending") or not replicas:
        return JobDecision.keep(job)
    active = [r for r in replicas if r.state in ACTIVE_REPLICA_STATES]
    if job.state == "cancelling":
        if active:
            return JobDecision.keep(job)
        return JobDecision("cancelled", reason="cancelled by user", mark_finished=True)

    lost = sorted((r for r in replicas if r.state == "lost"), key=lambda r: r.rank)
    failed = sorted((r for r in replicas if r.state == "failed"), key=lambda r: r.rank)
    if lost:
        # An infrastructure failure is not the job's fault: end the attempt and queue again.
        first = lost[0]
        why = first.reason or f"node {first.node} was lost"
        return JobDecision(
            "pending",
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
                "pending",
                reason=f"attempt {job.attempt} failed: {why}; restart "
                f"{job.restarts + 1} of {job.max_restarts}",
                stop_replicas=True,
                count_restart=True,
            )
        return JobDecision(
            "failed", exit_code=code, reason=why, stop_replicas=True, mark_finished=True
        )
    if all(r.state == "succeeded" for r in replicas):
        return JobDecision("succeeded", exit_code=0, mark_finished=True)
    if job.state == "starting" and all(r.state in ("running", "succeeded") for r in replicas):
        return JobDecision("running", mark_started=True)
    return JobDecision.keep(job)
