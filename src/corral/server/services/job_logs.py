"""A job's logs as the store holds them: a replica's page, every replica's at once, the tail
of a failed one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.server.errors import Invalid, NotFound
from corral.server.services.specs import job_spec
from corral.server.store.tables import Job, LogChunk, Replica
from corral.wire.api import (
    TERMINAL_JOB_STATES,
    JobLogs,
    LogPage,
    ReplicaLog,
)

LOG_TAIL_LINES = 20
LOG_PAGE_BYTES = 1 << 20
MAX_CHUNKS_PER_READ = 1024


def log_tail(session: Session, replica_id: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    chunks = session.scalars(
        select(LogChunk.data)
        .where(LogChunk.replica_id == replica_id)
        .order_by(LogChunk.offset.desc())
        .limit(16)
    ).all()
    text = "".join(reversed(chunks))
    return text.rstrip("\n").split("\n")[-lines:] if text else []


def read_logs(
    session: Session, job: Job, rank: int, offset: int, attempt: int | None = None
) -> LogPage:
    attempt = attempt or job.attempt
    if rank < 0 or rank >= job_spec(job).replicas:
        raise NotFound(f"job '{job.name}' has no replica {rank}")
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
    data, next_offset = _read_chunks(session, replica.id, offset, LOG_PAGE_BYTES)
    terminal = replica.state not in ACTIVE_REPLICA_STATES
    all_here = replica.log_bytes is None or replica.received_bytes >= replica.log_bytes
    complete = terminal and all_here and next_offset >= replica.received_bytes
    return LogPage(
        replica=rank,
        attempt=attempt,
        data=data,
        offset=offset,
        next_offset=next_offset,
        complete=complete,
    )


def read_all_logs(
    session: Session, job: Job, offsets: list[int], attempt: int | None = None
) -> JobLogs:
    """Every replica's log of `attempt` (default: the current one) from `offsets` (by rank;
    missing ranks from 0), at most LOG_PAGE_BYTES in all, shared fairly between replicas
    that have something new; and the job's state and reason, for a follower to show."""
    attempt = attempt or job.attempt
    replicas = (
        list(
            session.scalars(
                select(Replica)
                .where(Replica.job_id == job.id, Replica.attempt == attempt)
                .order_by(Replica.rank)
            )
        )
        if attempt
        else []
    )
    count = len(replicas) or job.next_replicas or job_spec(job).replicas
    if len(offsets) > count:
        message = f"{len(offsets)} offsets for {count} replicas: at most one per replica, by rank"
        raise Invalid(f"offset: {message}", [{"path": "offset", "message": message}])
    done = job.state in TERMINAL_JOB_STATES
    pages: list[ReplicaLog] = []
    budget = max(LOG_PAGE_BYTES // max(count, 1), 4096)
    left = LOG_PAGE_BYTES  # for the whole answer: beyond it, the next call reads on
    by_rank = {r.rank: r for r in replicas}
    for rank in range(count):
        offset = offsets[rank] if rank < len(offsets) else 0
        replica = by_rank.get(rank)
        if replica is None:
            pages.append(
                ReplicaLog(replica=rank, data="", offset=offset, next_offset=offset, complete=done)
            )
            continue
        if left > 0:
            data, next_offset = _read_chunks(session, replica.id, offset, min(budget, left))
            left -= len(data.encode())
        else:
            data, next_offset = "", offset
        terminal = replica.state not in ACTIVE_REPLICA_STATES
        all_here = replica.log_bytes is None or replica.received_bytes >= replica.log_bytes
        pages.append(
            ReplicaLog(
                replica=rank,
                data=data,
                offset=offset,
                next_offset=next_offset,
                complete=terminal and all_here and next_offset >= replica.received_bytes,
            )
        )
    return JobLogs(
        state=job.state,
        reason=job.reason,
        job_attempt=job.attempt,
        attempt=attempt,
        replicas=count,
        pages=pages,
    )


def _read_chunks(session: Session, replica_id: str, offset: int, budget: int) -> tuple[str, int]:
    """Log text from `offset`, whole chunks up to `budget` bytes (at least one); the offset
    after it."""
    chunks = session.execute(
        select(LogChunk.offset, LogChunk.nbytes, LogChunk.data)
        .where(LogChunk.replica_id == replica_id, LogChunk.offset >= offset)
        .order_by(LogChunk.offset)
        .limit(MAX_CHUNKS_PER_READ)  # the driver would otherwise fetch the whole rest
    )
    parts: list[str] = []
    next_offset = offset
    size = 0
    for chunk_offset, nbytes, data in chunks:
        if size and size + nbytes > budget:
            break
        parts.append(data)
        next_offset = chunk_offset + nbytes
        size += nbytes
    return "".join(parts), next_offset
