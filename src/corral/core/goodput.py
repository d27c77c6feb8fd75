"""Goodput accounting for a training job: where its wall time went, attempt by attempt.

Pure. The attempts come from the store (the server) or the ETTR simulator; the causes are
core.recovery's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from corral.core.recovery import Cause


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as the store keeps it."""

    started_at: float
    ended_at: float | None = None  # None: still running
    end_cause: Cause | None = None  # None: succeeded, cancelled, or still running
    start_step: int = 0  # the checkpoint step it resumed from
    first_step_at: float | None = None  # its first new step: start-up ends here
    step: int | None = None  # the last step it reached
    checkpoint_step: int | None = None  # its last complete checkpoint
    checkpoint_at: float | None = None  # when that checkpoint was reported
    checkpoint_overhead_s: float = 0.0  # time blocked saving checkpoints that were kept


@dataclass(frozen=True)
class Goodput:
    """Where a job's wall time went, since its first attempt started.

    wall_s = productive_s + checkpointing_s + startup_s + other_s + sum(lost_by_cause).
    Lost time of a failure: the work since its last checkpoint, the detection, the wait
    until the next attempt, and that attempt's start-up.
    """

    wall_s: float
    productive_s: float
    checkpointing_s: float
    startup_s: float  # the first attempt's start-up
    other_s: float  # idle after an attempt that ended with no failure (e.g. cancelled)
    lost_by_cause: Mapping[Cause, float]

    @property
    def ettr(self) -> float:
        """Effective training time ratio: productive time / wall time."""
        return self.productive_s / self.wall_s if self.wall_s > 0 else 0.0


def goodput(attempts: Sequence[AttemptRecord], end: float) -> Goodput:
    """Account a job's time up to `end` (now, or when the job finished)."""
    runs = sorted(attempts, key=lambda a: a.started_at)
    if not runs:
        return Goodput(0.0, 0.0, 0.0, 0.0, 0.0, {})
    lost: dict[Cause, float] = {}
    productive = checkpointing = startup = other = 0.0
    blame: Cause | None = None  # whose fault the current start-up is (None: the first)
    for i, a in enumerate(runs):
        stop = min(a.ended_at if a.ended_at is not None else end, end)
        stop = max(stop, a.started_at)
        work = min(max(a.first_step_at or a.started_at, a.started_at), stop)
        if i == 0:
            startup += work - a.started_at
        else:
            other += _charge(lost, blame, work - a.started_at)
        if a.end_cause is None:
            kept_end = stop
        elif (
            a.checkpoint_step is not None
            and a.checkpoint_at is not None
            and a.checkpoint_step > a.start_step
        ):
            kept_end = min(max(a.checkpoint_at, work), stop)
        else:
            kept_end = work
        kept = kept_end - work
        saving = min(max(a.checkpoint_overhead_s, 0.0), kept)
        productive += kept - saving
        checkpointing += saving
        other += _charge(lost, a.end_cause, stop - kept_end)
        following = runs[i + 1].started_at if i + 1 < len(runs) else end
        other += _charge(lost, a.end_cause, max(0.0, min(following, end) - stop))
        blame = a.end_cause
    wall = max(0.0, end - runs[0].started_at)
    return Goodput(wall, productive, checkpointing, startup, other, lost)


def _charge(lost: dict[Cause, float], cause: Cause | None, seconds: float) -> float:
    """Add `seconds` to `cause`; what has no cause is returned, for `other`."""
    if seconds <= 0:
        return 0.0
    if cause is None:
        return seconds
    lost[cause] = lost.get(cause, 0.0) + seconds
    return 0.0
