"""Queue order: priority first; then, between workspaces, dominant-resource fair share.

Each workspace's jobs wait in their own line (priority, then oldest first). The next job
decided is the head of the line that sorts first by:
  1. higher priority;
  2. a job that stays within its workspace's guarantee before one that would borrow
     (else a borrower takes idle GPUs that an owner reclaims right after: churn);
  3. the lower dominant share (DRF): a workspace's largest fraction of the fleet's GPUs,
     CPUs or memory held now, counting what this round has placed;
  4. submitted earlier, then job id.
A workspace's share grows as its jobs are placed, so the next of its jobs is re-keyed
when it comes up; the other heads keep their keys (their shares did not change).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from corral.core.placement import PendingJob

_Key = tuple[int, int, float, float, str, str]


@dataclass(frozen=True)
class Totals:
    gpus: int
    mcpus: int  # milli-CPUs: integer sums come out the same in any order
    memory_mb: int


class FairQueue:
    def __init__(
        self,
        jobs: Iterable[PendingJob],
        totals: Totals,
        fair_share: bool,
        within_guarantee: Callable[[PendingJob], bool],
        held: dict[str, list[int]],
    ) -> None:
        self._totals = totals
        self._fair = fair_share
        self._within = within_guarantee
        lines: dict[str, list[PendingJob]] = {}
        for job in jobs:
            lines.setdefault(job.workspace, []).append(job)
        self._lines = {
            ws: sorted(line, key=lambda j: (-j.priority, j.submitted_at, j.id), reverse=True)
            for ws, line in lines.items()
        }  # reversed: pop() takes the head
        self._held = held  # workspace -> [GPUs, milli-CPUs, memory] held now
        self._heap: list[_Key] = []
        self._due: str | None = None  # the workspace whose next head is still to be keyed
        for ws in self._lines:
            self._push(ws)

    def charge(self, workspace: str, gpus: int, mcpus: int, memory_mb: int) -> None:
        held = self._held.setdefault(workspace, [0, 0, 0])
        held[0] += gpus
        held[1] += mcpus
        held[2] += memory_mb

    def pop(self) -> PendingJob | None:
        if self._due is not None:
            self._push(self._due)
            self._due = None
        if not self._heap:
            return None
        ws = heapq.heappop(self._heap)[-1]
        self._due = ws
        return self._lines[ws].pop()

    def _push(self, ws: str) -> None:
        line = self._lines[ws]
        if line:
            job = line[-1]
            within = 0 if self._within(job) else 1
            share = self.share(ws) if self._fair else 0.0
            heapq.heappush(self._heap, (-job.priority, within, share, job.submitted_at, job.id, ws))

    def share(self, ws: str) -> float:
        held, t = self._held.get(ws, [0, 0, 0]), self._totals
        return max(
            held[0] / t.gpus if t.gpus else 0.0,
            held[1] / t.mcpus if t.mcpus else 0.0,
            held[2] / t.memory_mb if t.memory_mb else 0.0,
        )
