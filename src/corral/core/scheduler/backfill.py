"""Backfill (EASY): one reservation for the first blocked job; others must not delay it.

When the job at the head of the queue cannot start (not even by preemption), find its
*shadow time*: the earliest moment, as running jobs end at their `expected_end` (start +
max_runtime), at which the gang fits, and the nodes it would take then. Those nodes are
reserved for the rest of the round: a later job may use them only if it declares a
max_runtime that ends by the shadow time; any job may use the other nodes. So, as long
as runtimes are honest, nothing started behind the head delays it (Lifka's EASY).

Without estimates there is no shadow time and no reservation: the round places what fits
and the reason says the head has no start-time guarantee.

The shadow time is searched over prefixes of the ends (sorted by time): release a
prefix, try the gang, restore — doubling, then bisecting, so a round pays O(log n) gang
searches and O(n) incremental releases, never a copy of the cluster.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from corral.core.scheduler.gang import Freed, Holding, release, restore
from corral.core.scheduler.preempt import Finder
from corral.core.scheduler.running import End
from corral.core.scheduler.state import ClusterState
from corral.core.scheduler.topology import Fit


def shadow(
    st: ClusterState,
    ends: list[End],
    counts: Callable[[Holding], bool],
    find: Finder,
    now: float,
) -> tuple[float, Fit] | None:
    """When and where the blocked gang could start as running jobs end; None: unknown.

    `ends` is a heap of expected ends (consumed); entries for which `counts` is false
    (evicted, stale, other GPU classes) are skipped.
    """
    ends_ = _Ends(ends, counts)
    prefix = _Prefix(st, ends_)
    try:
        fits_at: int | None = None
        low, m = 0, 1  # low: the longest prefix known not to fit
        while fits_at is None:
            m = ends_.at_most(m)
            if prefix.fits(m, find):
                fits_at = m
            elif m < 1 or ends_.exhausted:
                return None
            else:
                low, m = m, m * 2
        high = fits_at
        while high - low > 1:
            mid = (low + high) // 2
            if prefix.fits(mid, find):
                high = mid
            else:
                low = mid
        prefix.apply(high)
        fit = find()
        assert fit is not None
        end = ends_.taken[high - 1].expected_end
        assert end is not None
        return max(now, end), fit
    finally:
        prefix.apply(0)


class _Ends:
    """The running jobs by expected end, sorted as far as asked for."""

    def __init__(self, heap: list[End], counts: Callable[[Holding], bool]) -> None:
        self._heap = heap
        self._counts = counts
        self._seen: set[str] = set()
        self.taken: list[Holding] = []

    @property
    def exhausted(self) -> bool:
        return not self._heap

    def at_most(self, n: int) -> int:
        """Sort the first n (or all there are); returns how many are sorted."""
        while len(self.taken) < n and self._heap:
            h = heapq.heappop(self._heap)[3]
            if h.job_id not in self._seen and self._counts(h):
                self._seen.add(h.job_id)
                self.taken.append(h)
        return len(self.taken)


class _Prefix:
    """The state with the first `n` ends released; moves both ways incrementally."""

    def __init__(self, st: ClusterState, ends: _Ends) -> None:
        self._st = st
        self._ends = ends
        self._freed: list[Freed] = []

    def apply(self, n: int) -> None:
        while len(self._freed) < n:
            self._freed.append(release(self._st, self._ends.taken[len(self._freed)]))
        while len(self._freed) > n:
            freed = self._freed.pop()
            restore(self._st, self._ends.taken[len(self._freed)], freed)

    def fits(self, n: int, find: Finder) -> bool:
        self.apply(n)
        return find() is not None
