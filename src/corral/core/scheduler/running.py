"""The running jobs as a round sees them: holdings, usage, victim pools and end times.

A standalone round builds this from the snapshot, O(running). A Scheduler keeps one
between rounds and applies only the difference — jobs gone, and jobs new or changed (a
RunningJob that is not the same object as last round) — so an unchanged job costs a few
C-level steps, not Python work. The round reads it and never changes it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Sequence
from itertools import compress, count

from corral.core.placement import RunningJob
from corral.core.scheduler.gang import Holding, Usage, add_usage, holding_of
from corral.core.scheduler.index import FleetIndex

End = tuple[float, str, int, Holding]  # (expected end, job id, tie-break, holding)


Cost = tuple[int, int, float, str]


def victim_cost(h: Holding) -> Cost:
    """Cheapest victim first: lowest priority, fewest GPUs, newest checkpoint (least work
    lost; the order does not depend on `now`), then job id."""
    return (h.priority, h.gpus, -h.since, h.job_id)


class RunningSet:
    def __init__(self) -> None:
        # By object identity: id() reads no object memory, and keeping the objects here
        # keeps their ids from being reused.
        self.jobs: dict[int, RunningJob] = {}
        self._refs: set[int] = set()
        self.holdings: dict[str, Holding] = {}  # by job id
        self.usage: Usage = {}
        # Preemptible holdings per GPU class (None: no GPUs), as (victim_cost, holding)
        # pairs: sorted, and bisected by tuple comparison in C (costs end in the job id,
        # so two pairs never compare their holdings).
        self.pools: dict[int | None, list[tuple[Cost, Holding]]] = {}
        # Heaps of expected ends per GPU class (None: no GPUs); an entry whose holding is
        # no longer current is stale, skipped when met and dropped on compaction.
        self.ends: dict[int | None, list[End]] = {}
        self._entries = 0
        self._seq = count()

    @classmethod
    def of(cls, running: Sequence[RunningJob], where: FleetIndex) -> RunningSet:
        rs = cls()
        rs.update(running, where)
        return rs

    def update(self, running: Sequence[RunningJob], where: FleetIndex) -> None:
        ids = list(map(id, running))
        refs = set(ids)
        # Set differences of small results, at C speed: no copy of either set is made.
        for gone in self._refs - refs:  # ended, or replaced by a new object
            self._remove(self.jobs.pop(gone).id)
        new = refs - self._refs
        self._refs = refs
        for job in compress(running, map(new.__contains__, ids)):
            if job.id in self.holdings:  # one job id listed twice: the first one counts
                if self.jobs.get(id(job)) is not job:
                    self._refs.discard(id(job))  # another object: look at it again next time
                continue
            self._add(job, holding_of(job, where))
        if self._entries > 2 * len(self.holdings) + 64:
            self._entries = 0
            for c, heap in self.ends.items():
                live = [e for e in heap if self.holdings.get(e[1]) is e[3]]
                heapq.heapify(live)
                self.ends[c] = live
                self._entries += len(live)

    def current(self, h: Holding) -> bool:
        return self.holdings.get(h.job_id) is h

    def _add(self, job: RunningJob, h: Holding) -> None:
        self.jobs[id(job)] = job
        self.holdings[job.id] = h
        add_usage(self.usage, h)
        if h.preemptible:
            cost = victim_cost(h)
            for c in h.gpu_classes or (None,):
                insort(self.pools.setdefault(c, []), (cost, h))
        if h.expected_end is not None:
            entry = (h.expected_end, h.job_id, next(self._seq), h)
            for c in h.gpu_classes or (None,):
                heapq.heappush(self.ends.setdefault(c, []), entry)
                self._entries += 1

    def _remove(self, job_id: str) -> None:
        h = self.holdings.pop(job_id)
        add_usage(self.usage, h, -1)
        if h.preemptible:
            cost = victim_cost(h)
            for c in h.gpu_classes or (None,):
                pool = self.pools[c]
                i = bisect_left(pool, (cost,))
                assert pool[i][1] is h
                del pool[i]
        # Its entries in `ends`, if any, are now stale.
