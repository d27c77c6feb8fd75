"""Follow a whole job: every replica's log, and its state while it waits, one request a poll.

    for event in follow_job(client, "train"):
        match event:
            case Waiting(state, reason): ...     # pending/starting, and each change of why
            case LogText(rank, attempt, data): ...
            case NewAttempt(attempt): ...        # the job restarted; its log starts over

Each attempt is read to its end (every replica's log complete, or a grace period after the
job moved on) before the next one, so no line is skipped across a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.wire.api import TERMINAL_JOB_STATES

if TYPE_CHECKING:
    from corral.client.client import Client

# How long an ended attempt's logs may still arrive after the job moved on (as follow_logs).
LOG_GRACE_S = 3.0
# How often a job that waits to be placed is asked again: no log is coming, and a queue of
# followers of pending jobs should not cost the server four requests a second each.
PENDING_POLL_S = 1.0


@dataclass(frozen=True)
class Waiting:
    """The job is not running yet (or no longer): its state and the server's reason."""

    state: str
    reason: str | None


@dataclass(frozen=True)
class Running:
    """The job's replicas run (shown once per attempt)."""

    attempt: int


@dataclass(frozen=True)
class LogText:
    rank: int
    attempt: int
    data: str


@dataclass(frozen=True)
class NewAttempt:
    attempt: int


@dataclass(frozen=True)
class Ended:
    """The job has ended and every log of its last attempt has been read."""

    state: str


FollowEvent = Waiting | Running | LogText | NewAttempt | Ended

_WAITING = frozenset({"pending", "starting"})


def follow_job(client: Client, name: str, poll_s: float = 0.25) -> Iterator[FollowEvent]:
    """Events until the job has ended and its logs are read. A Waiting event comes when the
    job is pending or starting and its state or reason changes; a Running one when it runs."""
    attempt: int | None = None  # pinned once the job has started
    offsets: list[int] = []
    shown: tuple[str, str | None] | None = None
    running_shown: int | None = None
    waiting_since: float | None = None
    while True:
        answer = client.all_logs(name, offsets, attempt)
        now = client._clock()
        if answer.state in _WAITING and (answer.state, answer.reason) != shown:
            shown = (answer.state, answer.reason)
            yield Waiting(answer.state, answer.reason)
        elif answer.state == "running" and running_shown != answer.job_attempt:
            running_shown, shown = answer.job_attempt, None
            yield Running(answer.job_attempt)
        if attempt is None and answer.attempt >= 1:
            attempt = answer.attempt
        offsets = [p.next_offset for p in answer.pages]
        got = False
        for page in answer.pages:
            if page.data:
                got = True
                yield LogText(page.replica, answer.attempt, page.data)
        complete = bool(answer.pages) and all(p.complete for p in answer.pages)
        if got and not complete:
            continue  # there may be more right away: read on without sleeping
        newer = attempt is not None and answer.job_attempt > attempt
        if newer or answer.state in TERMINAL_JOB_STATES:
            waiting_since = now if waiting_since is None else waiting_since
            if complete or now - waiting_since >= LOG_GRACE_S:
                if not newer:
                    yield Ended(answer.state)
                    return
                # One attempt at a time: none of their logs is skipped.
                attempt, offsets, waiting_since = (attempt or 0) + 1, [], None
                yield NewAttempt(attempt)
                continue
        else:
            waiting_since = None
        client._sleep(max(poll_s, PENDING_POLL_S) if answer.state == "pending" else poll_s)
