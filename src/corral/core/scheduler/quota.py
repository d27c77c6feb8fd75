"""Quotas: per-workspace guaranteed GPUs per model, and borrowing of idle GPUs.

`Snapshot.quotas` maps workspace -> GPU model -> guaranteed GPUs ("*": any model). A GPU
counts against the first key of its workspace that names its model (case-insensitive
substring, like `gpus: H100:8`), else against "*", else against nothing (guarantee 0).
No quotas at all: nothing is checked and nothing is borrowed.

Within its guarantee a workspace runs anything. Beyond it, a job runs on idle GPUs only
as a *borrower*: it must be preemptible, and it stays reclaimable — an owner that needs
its guarantee back may preempt it (see preempt.py). Which of a workspace's running jobs
are the borrowers is recomputed from the snapshot each round: non-preemptible jobs first,
then by priority, then oldest first, fill the guarantee; whatever is beyond is borrowed.

So the invariant is: a workspace's non-preemptible GPUs never exceed its guarantee, and
everything beyond the guarantee is preemptible. A non-preemptible job is checked against
the guarantee less the workspace's *non-preemptible* GPUs only: its own preemptible jobs
do not block it (they become the borrowers), else they would be preempted only to
borrow again at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from corral.core.placement import PendingJob
from corral.core.scheduler import reasons
from corral.core.scheduler.filters import CPU_ONLY, Shape
from corral.core.scheduler.gang import Holding, UsageKey
from corral.core.scheduler.state import ClusterState

ANY_MODEL = "*"
Bucket = tuple[str, str]  # (workspace, quota key)


class QuotaBook:
    def __init__(
        self, quotas: Mapping[str, Mapping[str, int]], st: ClusterState, evicted: Set[str]
    ) -> None:
        self.enabled = bool(quotas)
        self._quotas = quotas
        self._st = st
        self._evicted = evicted  # the round's victims so far
        self._keys: dict[tuple[str, int], Bucket | None] = {}
        self.used: dict[Bucket, int] = {}  # all GPUs a workspace holds, per bucket
        self.firm: dict[Bucket, int] = {}  # of which non-preemptible
        self._running: Sequence[Holding] = ()
        self._members: dict[Bucket | None, list[tuple[Holding, int]]] = {}
        self._stale: set[Bucket | None] = set()  # buckets whose borrowers are to be redone
        self._borrowed: dict[Bucket | None, set[str]] = {}
        self._placed_within: dict[Bucket, int] = {}  # guarantee taken by this round's gangs

    def bucket(self, workspace: str, c: int | None) -> Bucket | None:
        if c is None or c == CPU_ONLY:
            return None
        key = (workspace, c)
        if key in self._keys:
            return self._keys[key]
        model = self._st.classes[c].model.upper()
        keys = self._quotas.get(workspace, {})
        named = sorted(k for k in keys if k != ANY_MODEL and k.upper() in model)
        name = named[0] if named else (ANY_MODEL if ANY_MODEL in keys else None)
        bucket = None if name is None else (workspace, name)
        self._keys[key] = bucket
        return bucket

    def guarantee(self, bucket: Bucket | None) -> int:
        return 0 if bucket is None else self._quotas[bucket[0]][bucket[1]]

    # -- usage -----------------------------------------------------------------------

    def add_running(self, holdings: Sequence[Holding], usage: Mapping[UsageKey, int]) -> None:
        """The jobs running at the snapshot, and their GPUs summed per usage key."""
        if not self.enabled:
            return
        self._running = holdings
        for (workspace, c, preemptible), gpus in usage.items():
            b = self.bucket(workspace, c)
            if b is not None and gpus:
                self.used[b] = self.used.get(b, 0) + gpus
                if not preemptible:
                    self.firm[b] = self.firm.get(b, 0) + gpus

    def _portions(self, h: Holding) -> dict[Bucket | None, int]:
        """The holding's GPUs per quota bucket (two GPU classes may share a bucket)."""
        out: dict[Bucket | None, int] = {}
        for c, gpus in h.by_class:
            b = self.bucket(h.workspace, c)
            out[b] = out.get(b, 0) + gpus
        return out

    def charge(self, h: Holding, sign: int = 1) -> None:
        if not self.enabled or not h.gpus:
            return
        for b, gpus in self._portions(h).items():
            if b is None:
                continue
            self.used[b] = self.used.get(b, 0) + sign * gpus
            if not h.preemptible:
                self.firm[b] = self.firm.get(b, 0) + sign * gpus
            if h.placed_now and not h.borrowed:
                self._placed_within[b] = self._placed_within.get(b, 0) + sign * gpus

    def evicted(self, h: Holding) -> None:
        if self.enabled and h.gpus:
            self._stale.update(self._portions(h))

    def is_borrowed(self, h: Holding) -> bool:
        """Beyond its workspace's guarantee in any of its buckets, so reclaimable (worked
        out when first asked)."""
        if h.placed_now or not self.enabled:
            return h.borrowed
        if self._running:  # group the running jobs by bucket the first time it matters
            for r in self._running:
                for m, gpus in self._portions(r).items():
                    self._members.setdefault(m, []).append((r, gpus))
                    self._stale.add(m)
            self._running = ()
        for b in self._portions(h):
            if b in self._stale:
                self._remark(b)
            if h.job_id in self._borrowed.get(b, ()):
                return True
        return False

    def _remark(self, b: Bucket | None) -> None:
        self._stale.discard(b)
        members = [(h, n) for h, n in self._members.get(b, ()) if h.job_id not in self._evicted]
        members.sort(key=lambda m: (m[0].preemptible, -m[0].priority, m[0].started_at, m[0].job_id))
        # This round's placements keep the mark they were placed with; they came first.
        room = self.guarantee(b) - (0 if b is None else self._placed_within.get(b, 0))
        borrowed = self._borrowed[b] = set()
        for h, gpus in members:
            room -= gpus
            if b is None or room < 0:
                borrowed.add(h.job_id)

    # -- a job asking ----------------------------------------------------------------

    def within(self, workspace: str, c: int, need: int) -> bool:
        """Whether the workspace, with `need` more GPUs of class c, stays within its
        guarantee: then it borrows nothing, and may reclaim what others borrowed."""
        if not self.enabled:
            return True
        b = self.bucket(workspace, c)
        return b is not None and self.used.get(b, 0) + need <= self.guarantee(b)

    def firm_within(self, workspace: str, c: int, need: int) -> bool:
        """Whether `need` more non-preemptible GPUs keep those within the guarantee."""
        if not self.enabled:
            return True
        b = self.bucket(workspace, c)
        return b is not None and self.firm.get(b, 0) + need <= self.guarantee(b)

    def allowed(self, job: PendingJob, shape: Shape) -> tuple[int, ...]:
        """The classes the job may use now: all, unless it is non-preemptible and its
        guarantee is taken by non-preemptible work (only a reclaimable job borrows)."""
        if not self.enabled or job.preemptible or shape.gpus == 0:
            return shape.classes
        need = shape.gpus * shape.replicas
        return tuple(c for c in shape.classes if self.firm_within(job.workspace, c, need))

    def never(self, job: PendingJob, shape: Shape) -> str | None:
        """A non-preemptible job bigger than its whole guarantee never fits as asked."""
        if not self.enabled or job.preemptible or shape.gpus == 0 or not shape.classes:
            return None
        need = shape.gpus * shape.replicas
        best = max(self.guarantee(self.bucket(job.workspace, c)) for c in shape.classes)
        if need <= best:
            return None
        return reasons.QUOTA_NEVER.format(
            workspace=job.workspace, guarantee=best, what=shape.what, need=need
        )

    def exhausted(self, job: PendingJob, shape: Shape) -> str:
        c = shape.classes[0]
        b = self.bucket(job.workspace, c)
        return reasons.QUOTA_EXHAUSTED.format(
            workspace=job.workspace,
            used=self.firm.get(b, 0) if b else 0,
            guarantee=self.guarantee(b),
            what=shape.what,
        )
