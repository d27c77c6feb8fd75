"""A job's past beyond its current attempt: where each attempt's replicas ran and when each
last reported a step (the web console's attempts timeline and progress chart), and how much
of a replica's log the store holds (where a follower starts).

`recovery.attempt_views` has each attempt's times, steps and end; the replicas of every
attempt stay in the store with their node, so this reads them — one query per job, not one
per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.states import ReplicaState
from corral.server.store.tables import Attempt, Job, Node, Replica

# A job restarted many times: the page shows its latest attempts, not hundreds of bars.
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class AttemptRun:
    """One replica of one attempt, as the job page shows it."""

    attempt: int
    rank: int
    node: str | None  # None: the node was deleted since
    state: ReplicaState
    step: int | None
    progress_at: float | None  # when it last reported a new step (server clock)
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    reason: str | None


def attempt_runs(session: Session, job: Job, last: int = MAX_ATTEMPTS) -> list[AttemptRun]:
    """Every replica of the job's latest `last` attempts, by attempt then rank."""
    if not job.attempt:
        return []
    rows = session.execute(
        select(
            Replica.attempt,
            Replica.rank,
            Node.name,
            Replica.state,
            Replica.step,
            Replica.progress_at,
            Replica.started_at,
            Replica.finished_at,
            Replica.exit_code,
            Replica.reason,
        )
        .outerjoin(Node, Node.id == Replica.node_id)
        .where(Replica.job_id == job.id, Replica.attempt > job.attempt - last)
        .order_by(Replica.attempt, Replica.rank)
    )
    return [
        AttemptRun(
            attempt=attempt,
            rank=rank,
            node=node,
            state=ReplicaState(state),
            step=step,
            progress_at=progress_at,
            started_at=started_at,
            finished_at=finished_at,
            exit_code=exit_code,
            reason=reason,
        )
        for (
            attempt,
            rank,
            node,
            state,
            step,
            progress_at,
            started_at,
            finished_at,
            exit_code,
            reason,
        ) in rows
    ]


@dataclass(frozen=True)
class AttemptMarks:
    """Moments of an attempt's progress that its AttemptView leaves out."""

    first_step_at: float | None  # its first new step: start-up ended
    checkpoint_at: float | None  # when its last checkpoint was reported


def attempt_marks(session: Session, job: Job, last: int = MAX_ATTEMPTS) -> dict[int, AttemptMarks]:
    """The latest `last` attempts' marks, by attempt number."""
    rows = session.execute(
        select(Attempt.attempt, Attempt.first_step_at, Attempt.checkpoint_at).where(
            Attempt.job_id == job.id, Attempt.attempt > job.attempt - last
        )
    )
    return {n: AttemptMarks(first, checkpoint) for n, first, checkpoint in rows}


def log_size(session: Session, job: Job, attempt: int, rank: int) -> int | None:
    """How many bytes of the replica's log the store holds; None: no such replica (not
    placed yet, or its attempt had fewer)."""
    found: int | None = session.scalar(
        select(Replica.received_bytes).where(
            Replica.job_id == job.id, Replica.attempt == attempt, Replica.rank == rank
        )
    )
    return found
