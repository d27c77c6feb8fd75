"""Quotas: per-workspace guaranteed GPUs per model, the unguaranteed pool, and borrowing.

`Snapshot.quotas` maps workspace -> GPU model -> guaranteed GPUs ("*": any model). A GPU
counts against the first key of its workspace that names its model (case-insensitive
substring, like `gpus: H100:8`), else against "*", else against nothing (guarantee 0).
No quotas at all: nothing is checked and nothing is borrowed.

A workspace's quota is a guarantee, like a Kueue ClusterQueue's nominal quota in a cohort
or Slurm's GrpTRES held for an account: the owner gets those GPUs whenever it asks, by
reclaiming whatever others borrowed. Three kinds of use follow from it:
  1. within its guarantee a workspace runs anything;
  2. GPUs that no one is guaranteed (per model: the ready fleet's GPUs less the sum of
     guarantees) form a shared *unguaranteed pool*: any workspace's non-preemptible job
     may use it beyond its own guarantee, in queue order (priority, then fair share),
     and is never preempted for it (pool.py: it may never take a GPU that would leave a
     guarantee unreachable, counted exactly when "*" guarantees overlap named ones);
  3. beyond both, a job runs on idle GPUs only as a *borrower*: it must be preemptible,
     and it stays reclaimable: an owner that needs its guarantee back may preempt it
     (see preempt.py).
A non-preemptible job counts its own workspace's guarantee first, then the pool. A job
larger than its guarantee plus the whole pool never fits as asked; one that does not fit
now waits with the limit that binds in its reason.

Which of a workspace's running jobs are the borrowers is recomputed from the snapshot
each round: non-preemptible jobs first, then by priority, then oldest first, fill the
guarantee; whatever is beyond is borrowed (a non-preemptible job beyond it runs in the
pool, and is never a victim). A non-preemptible job is checked against the guarantee less
the workspace's *non-preemptible* GPUs only: its own preemptible jobs do not block it
(they become the borrowers), else they would be preempted only to borrow again at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from corral.core.placement import PendingJob
from corral.core.scheduler import reasons
from corral.core.scheduler.domains import free_gpus
from corral.core.scheduler.filters import CPU_ONLY, Shape
from corral.core.scheduler.gang import Holding, UsageKey
from corral.core.scheduler.pool import Pool
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
        self._atom: dict[int, int] = {}  # GPU class -> its atom in the pool
        self.pool = self._pool() if self.enabled else Pool({}, {})
        self._never: dict[tuple[str, tuple[int, ...], int], str | None] = {}

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

    def _pool(self) -> Pool:
        """Classes that count against the same guarantees (of positive size) are one atom."""
        workspaces = sorted(self._quotas)
        atoms: dict[tuple[Bucket | None, ...], int] = {}
        capacity: dict[int, int] = {}
        masks: dict[Bucket, int] = {}
        st = self._st
        fleet = st.topology.domains[st.topology.fleet].cap if st.nodes else {}
        for g in st.classes:
            buckets = [self.bucket(ws, g.id) for ws in workspaces]
            sig = tuple(b if self.guarantee(b) > 0 else None for b in buckets)
            a = self._atom[g.id] = atoms.setdefault(sig, len(atoms))
            capacity[a] = capacity.get(a, 0) + free_gpus(fleet.get(g.id, []))
            for b in sig:
                if b is not None:
                    masks[b] = masks.get(b, 0) | 1 << a
        return Pool(capacity, {b: (self.guarantee(b), m) for b, m in masks.items()})

    # -- usage -----------------------------------------------------------------------

    def add_running(self, holdings: Sequence[Holding], usage: Mapping[UsageKey, int]) -> None:
        """The jobs running at the snapshot, and their GPUs summed per usage key."""
        if not self.enabled:
            return
        self._running = holdings
        for (workspace, c, preemptible), gpus in usage.items():
            b = self.bucket(workspace, c)
            if c is not None and not preemptible and gpus:
                self.pool.charge(self._atom[c], b, gpus)
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
        if not h.preemptible:
            for c, gpus in h.by_class:
                if c is not None:
                    self.pool.charge(self._atom[c], self.bucket(h.workspace, c), sign * gpus)
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
        """Whether `need` more non-preemptible GPUs keep those within the guarantee (such
        a job goes before one that needs the pool: owners first)."""
        if not self.enabled:
            return True
        b = self.bucket(workspace, c)
        return b is not None and self.firm.get(b, 0) + need <= self.guarantee(b)

    def _excess(self, workspace: str, c: int, need: int, *, empty: bool = False) -> int:
        """Of `need` non-preemptible GPUs, those beyond what the guarantee has left (all of
        it left: `empty`)."""
        b = self.bucket(workspace, c)
        held = 0 if empty or b is None else self.firm.get(b, 0)
        return need - max(0, min(need, self.guarantee(b) - held))

    def firm_fits(self, workspace: str, c: int, need: int) -> bool:
        """Whether `need` more non-preemptible GPUs of class c fit in the workspace's
        guarantee plus what the unguaranteed pool has left."""
        if not self.enabled:
            return True
        b = self.bucket(workspace, c)
        left = 0 if b is None else self.guarantee(b) - self.firm.get(b, 0)
        if need <= left:  # the usual case, first: within its own guarantee
            return True
        return self.pool.fits(self._atom[c], b, need, need - max(0, left))

    def allowed(self, job: PendingJob, shape: Shape) -> tuple[int, ...]:
        """The classes the job may use now: all, unless it is non-preemptible and neither
        its guarantee nor the unguaranteed pool has room (only a reclaimable job borrows)."""
        if not self.enabled or job.preemptible or shape.gpus == 0:
            return shape.classes
        need = shape.gpus * shape.replicas
        return tuple(c for c in shape.classes if self.firm_fits(job.workspace, c, need))

    def never(self, job: PendingJob, shape: Shape) -> str | None:
        """A non-preemptible job bigger than its whole guarantee plus the whole unguaranteed
        pool never fits as asked (on the nodes ready now)."""
        if not self.enabled or job.preemptible or shape.gpus == 0 or not shape.classes:
            return None
        need = shape.gpus * shape.replicas
        if any(need <= self.guarantee(self.bucket(job.workspace, c)) for c in shape.classes):
            return None
        key = (job.workspace, shape.classes, need)
        if key in self._never:
            return self._never[key]
        reason = None
        fits = (
            self.pool.fits_empty(
                self._atom[c],
                self.bucket(job.workspace, c),
                need,
                self._excess(job.workspace, c, need, empty=True),
            )
            for c in shape.classes
        )
        if not any(fits):
            c = max(shape.classes, key=lambda c: self._ever(job.workspace, c))
            reason = reasons.QUOTA_NEVER.format(
                workspace=job.workspace,
                guarantee=self.guarantee(self.bucket(job.workspace, c)),
                what=shape.what,
                pool=self.pool.unguaranteed(self._atom[c]),
                need=need,
            )
        self._never[key] = reason
        return reason

    def _ever(self, workspace: str, c: int) -> int:
        return self.guarantee(self.bucket(workspace, c)) + self.pool.unguaranteed(self._atom[c])

    def exhausted(self, job: PendingJob, shape: Shape) -> str:
        """Which limit binds, for the class that comes closest to room."""
        ws = job.workspace

        def room(c: int) -> int:
            b = self.bucket(ws, c)
            left = self.guarantee(b) - (self.firm.get(b, 0) if b else 0)
            return max(0, left) + self.pool.free(self._atom[c])

        c = max(shape.classes, key=room)
        b = self.bucket(ws, c)
        what = shape.what
        guarantee = self.guarantee(b)
        if guarantee == 0:
            own = reasons.QUOTA_NONE.format(workspace=ws, what=what)
        else:
            held = self.firm.get(b, 0) if b else 0
            own = reasons.QUOTA_HELD.format(workspace=ws, held=held, guarantee=guarantee, what=what)
        a = self._atom[c]
        size, free = self.pool.unguaranteed(a), self.pool.free(a)
        if size == 0:
            pool = reasons.POOL_NONE.format(what=what)
        elif free == 0:
            pool = reasons.POOL_TAKEN.format(pool=size, what=what)
        else:
            pool = reasons.POOL_SHORT.format(free=free, pool=size, what=what)
        return reasons.QUOTA_BLOCKED.format(own=own, pool=pool, need=shape.gpus * shape.replicas)
