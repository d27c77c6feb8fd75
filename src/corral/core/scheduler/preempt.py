"""Preemption: when a gang does not fit, the fewest GPUs of lower-priority work to stop.

Who may be a victim (always: preemptible, running before this round, not already chosen):
  - priority: a job of lower priority — of the same workspace, or one running on borrowed
    GPUs (with quotas on, a workspace's guarantee is not taken by another's priority);
  - reclaim: a borrower from another workspace, when the job stays within its own
    workspace's guarantee; its priority may be lower (or equal: see config.Reclaim).

How victims are chosen (Kubernetes' "remove all, then reprieve", made incremental):
  1. give up at once unless the gang could fit with every candidate gone — counted in
     replica slots per node, or per domain the gang may span (preempting for a rack
     gang must free a rack's worth, not GPUs scattered over the fleet);
  2. release candidates cheapest first (lowest priority, fewest GPUs, least work lost
     since the last checkpoint), in doubling batches, until the gang fits;
     if it never fits, restore everything: never preempt for a gang that would not fit;
  3. keep as victims only those holding something on the nodes found, then try to
     reprieve each — most GPUs first — and keep the reprieve if the gang still fits.
The result is minimal: no victim can be spared. Everything not evicted is restored
exactly, so the state is as before whatever the answer. At most
config.max_victims_considered candidates are looked at, cheapest first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set

from corral.core.placement import PendingJob
from corral.core.scheduler import reasons
from corral.core.scheduler.config import Level, Reclaim, SchedulerConfig
from corral.core.scheduler.domains import CHAIN_LEVELS
from corral.core.scheduler.filters import CPU_ONLY, Shape
from corral.core.scheduler.gang import Freed, Holding, release, restore
from corral.core.scheduler.quota import QuotaBook
from corral.core.scheduler.running import Cost, victim_cost
from corral.core.scheduler.state import ClusterState
from corral.core.scheduler.topology import Fit

Finder = Callable[[], Fit | None]


class Preemptor:
    def __init__(
        self,
        st: ClusterState,
        quota: QuotaBook,
        pools: Mapping[int | None, list[tuple[Cost, Holding]]],
        evicted: Set[str],
        config: SchedulerConfig,
        now: float,
    ) -> None:
        self._st = st
        self._evicted = evicted
        self._quota = quota
        self._config = config
        self._now = now
        self._by_class = pools  # preemptible running jobs per class, cheapest first

    def candidates(self, job: PendingJob, shape: Shape) -> list[Holding]:
        need = shape.gpus * shape.replicas
        if CPU_ONLY in shape.classes:
            pools = list(self._by_class.values())
        else:
            pools = [self._by_class[c] for c in shape.classes if c in self._by_class]
        found: dict[str, Holding] = {}
        for pool in pools:
            for _, h in pool:
                if h.priority > job.priority:
                    break  # the pool is sorted by priority
                if h.job_id not in self._evicted and (
                    self._by_priority(job, h) or self._to_reclaim(job, shape, h, need)
                ):
                    found[h.job_id] = h
        victims = list(found.values())
        if len(pools) > 1:
            victims.sort(key=victim_cost)
        return victims[: self._config.max_victims_considered]

    def _by_priority(self, job: PendingJob, h: Holding) -> bool:
        if h.priority >= job.priority:
            return False
        return not self._quota.enabled or h.workspace == job.workspace or self._quota.is_borrowed(h)

    def _to_reclaim(self, job: PendingJob, shape: Shape, h: Holding, need: int) -> bool:
        policy = self._config.reclaim
        if not (self._quota.enabled and h.workspace != job.workspace):
            return False
        if not self._quota.is_borrowed(h):
            return False
        if policy == Reclaim.NEVER:
            return False
        if h.priority == job.priority and policy != Reclaim.LOWER_OR_EQUAL_PRIORITY:
            return False
        return any(
            c in shape.classes and self._quota.within(job.workspace, c, need)
            for c, _ in h.by_class
            if c is not None
        )

    def could_hold(self, shape: Shape, victims: Sequence[Holding]) -> bool:
        """Step 1: an upper bound, counting replica slots as if every candidate were gone:
        per node (a gang on one node) or per domain it may span, from the slot tables plus
        what the candidates' GPUs add on their nodes. CPUs and memory are not counted."""
        if shape.gpus == 0:
            return True
        st, g, need = self._st, shape.gpus, shape.replicas
        level = Level.NODE if need == 1 or shape.spread == Level.NODE else shape.spread
        for c in shape.classes:
            held: dict[int, int] = {}
            for h in victims:
                for p in h.parts:
                    n = sum(1 for i in p.gpus if st.slot_class[p.node].get(i) == c)
                    if n:
                        held[p.node] = held.get(p.node, 0) + n
            if level == Level.NODE:
                if any((st.free_gpus(node, c) + n) // g >= need for node, n in held.items()):
                    return True
                continue
            room = dict(st.slot_table(level, c, g).slots)
            at = CHAIN_LEVELS.index(level)
            for node, n in held.items():
                free = st.free_gpus(node, c)
                d = st.topology.chain[node][at]
                room[d] = room.get(d, 0) + (free + n) // g - free // g
            if any(slots >= need for slots in room.values()):
                return True
        return False

    def choose(self, victims: Sequence[Holding], find: Finder) -> tuple[Fit, list[Holding]] | None:
        """Steps 2 and 3; `find` searches the gang on the state as it is at each call."""
        freed: dict[str, Freed] = {}
        released: list[Holding] = []
        fit: Fit | None = None
        start, batch = 0, 1
        while fit is None and start < len(victims):
            for h in victims[start : start + batch]:
                freed[h.job_id] = self._release(h)
                released.append(h)
            start, batch = start + batch, batch * 2
            fit = find()
        if fit is None:
            for h in reversed(released):
                self._restore(h, freed.pop(h.job_id))
            return None
        on_fit = {node for node, _ in fit.nodes}
        needed = [h for h in released if any(p.node in on_fit for p in h.parts)]
        kept = {h.job_id for h in needed}
        spare = [h for h in released if h.job_id not in kept]
        for h in spare:
            self._restore(h, freed.pop(h.job_id))
        again = find() if spare else fit
        if again is None:  # the spared jobs held quota the gang needs: keep them evicted
            for h in spare:
                freed[h.job_id] = self._release(h)
            needed, again = released, fit
        fit = again
        # Reprieve the most valuable first: most GPUs, then priority, then work at stake.
        needed.sort(key=lambda h: (-h.gpus, -h.priority, -h.work_lost(self._now), h.job_id))
        victims_left: list[Holding] = []
        for h in needed:
            self._restore(h, freed.pop(h.job_id))
            spared = find()
            if spared is not None:
                fit = spared
            else:
                freed[h.job_id] = self._release(h)
                victims_left.append(h)
        return fit, victims_left

    def _release(self, h: Holding) -> Freed:
        self._quota.charge(h, -1)
        return release(self._st, h)

    def _restore(self, h: Holding, freed: Freed) -> None:
        restore(self._st, h, freed)
        self._quota.charge(h)


def victim_reason(job: PendingJob, h: Holding, what: str) -> str:
    if h.priority < job.priority:
        return reasons.PREEMPTED_FOR_PRIORITY.format(
            job=job.id, priority=job.priority, victim_priority=h.priority
        )
    return reasons.PREEMPTED_TO_RECLAIM.format(
        job=job.id, what=what, victim_workspace=h.workspace, workspace=job.workspace
    )
