"""One scheduling round: the stages chained, job by job, in queue order (see README.md).

    queue ─► filters ─► quota ─► topology/scores ─► gang ─► [preempt] ─► [backfill]

`Round.decisions()` yields one `Decision` per pending job as it is made (sans-I/O: the
caller may time, log or stop); `Round.run()` consumes it and returns the plan. A round is
pure: the snapshot and `now` in, the plan out.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from corral.core.placement import (
    Decision,
    GangPlacement,
    Outcome,
    PendingJob,
    PlacementPlan,
    Preemption,
    Reservation,
    Snapshot,
)
from corral.core.scheduler import explain, reasons
from corral.core.scheduler.backfill import shadow
from corral.core.scheduler.config import SchedulerConfig
from corral.core.scheduler.filters import CPU_ONLY, Shape, ShapeKey, compile_shape, shape_key
from corral.core.scheduler.gang import Holding, commit
from corral.core.scheduler.index import FleetIndex, milli
from corral.core.scheduler.preempt import Preemptor, victim_reason
from corral.core.scheduler.queue import FairQueue, Totals
from corral.core.scheduler.quota import QuotaBook
from corral.core.scheduler.running import RunningSet
from corral.core.scheduler.state import ClusterState
from corral.core.scheduler.topology import Fit, Search

_NoFitKey = tuple[ShapeKey, tuple[int, ...], bool]


class Round:
    def __init__(
        self,
        snapshot: Snapshot,
        now: float,
        config: SchedulerConfig | None = None,
        index: FleetIndex | None = None,
        running: RunningSet | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.now = now
        self.snapshot = snapshot
        self.index = index if index is not None else FleetIndex(snapshot.nodes)
        self.st = ClusterState(self.index)
        self.running = (
            running if running is not None else RunningSet.of(snapshot.running, self.index)
        )
        self.placed: list[Holding] = []  # this round's gangs, as holdings
        self.evicted: set[str] = set()
        self.quota = QuotaBook(snapshot.quotas, self.st, self.evicted)
        usage = self.running.usage
        self.quota.add_running(
            list(self.running.holdings.values()), {k: u[0] for k, u in usage.items()}
        )
        # DRF: what each workspace holds now, in integers (sums exact in any order).
        self._held: dict[str, list[int]] = {}
        for (ws, _, _), u in usage.items():
            held = self._held.setdefault(ws, [0, 0, 0])
            for k in range(3):
                held[k] += u[k]
        self._preemptor: Preemptor | None = None
        self._shapes: dict[ShapeKey, Shape] = {}
        self._job_shape: dict[str, Shape] = {}
        # Within a round free capacity only shrinks (until a preemption frees some), so a
        # shape that did not fit will not fit later: later jobs of that shape skip the search.
        self._no_fit: dict[_NoFitKey, str] = {}
        self._no_preempt: dict[tuple[object, ...], str] = {}
        self.reservation: Reservation | None = None
        self._reserved: frozenset[int] = frozenset()
        self._reservation_tried = False
        self.placements: list[GangPlacement] = []
        self.preemptions: list[Preemption] = []
        self.pending_reasons: dict[str, str] = {}
        self.never_fits: dict[str, str] = {}

    # -- driving ---------------------------------------------------------------------

    def decisions(self) -> Iterator[Decision]:
        queue = FairQueue(
            self.snapshot.pending,
            self._totals(),
            self.config.fair_share,
            self._within,
            self._held,
        )
        while (job := queue.pop()) is not None:
            decision = self.decide(job)
            if decision.placement is not None:
                n = len(decision.placement.replicas)
                d = job.demand
                queue.charge(job.workspace, d.gpus * n, milli(d.cpus) * n, d.memory_mb * n)
            yield decision

    def run(self) -> PlacementPlan:
        for _ in self.decisions():
            pass
        return self.plan()

    def plan(self) -> PlacementPlan:
        return PlacementPlan(
            placements=tuple(self.placements),
            pending_reasons=dict(self.pending_reasons),
            preemptions=tuple(self.preemptions),
            never_fits=dict(self.never_fits),
            reservations=() if self.reservation is None else (self.reservation,),
        )

    # -- one job ---------------------------------------------------------------------

    def decide(self, job: PendingJob) -> Decision:
        shape = self._shape(job)
        if shape.never is not None:
            return self._unplaced(job, shape.never, Outcome.UNRESOLVABLE)
        if not self.st.nodes:
            return self._unplaced(job, reasons.NO_NODES, Outcome.UNSCHEDULABLE)
        never = self.quota.never(job, shape)
        if never is not None:
            return self._unplaced(job, never, Outcome.UNRESOLVABLE)
        allowed = self.quota.allowed(job, shape)
        avoid = self._avoid(job)
        if allowed:
            key = (shape.key, allowed, bool(avoid))
            reason = self._no_fit.get(key)
            if reason is None:
                fit = Search(self.st, shape, avoid).find(allowed)
                if fit is not None:
                    return self._place(job, shape, fit, [])
                head = self.reservation.job_id if avoid and self.reservation else None
                reason = explain.no_room(self.st, shape, allowed, head)
                if shape.spot_left_out:
                    n = shape.spot_left_out
                    reason += reasons.SPOT_LEFT_OUT.format(count=n, s="" if n == 1 else "s")
                self._no_fit[key] = reason
        else:
            reason = self.quota.exhausted(job, shape)
        if self.config.preemption:
            placed = self._preempt(job, shape, not allowed, avoid)
            if isinstance(placed, Decision):
                return placed
            reason += placed
        if self.config.backfill and allowed and not self._reservation_tried:
            reason += self._reserve(job, shape)
        return self._unplaced(job, reason, Outcome.UNSCHEDULABLE)

    def _shape(self, job: PendingJob) -> Shape:
        shape = self._job_shape.get(job.id)
        if shape is None:
            key = shape_key(job)
            shape = self._shapes.get(key)
            if shape is None:
                shape = self._shapes[key] = compile_shape(
                    job, self.st, self.config, self.snapshot.fleet_models
                )
            self._job_shape[job.id] = shape
        return shape

    def _avoid(self, job: PendingJob) -> frozenset[int]:
        """Reserved nodes, unless the job promises to end before the reservation starts."""
        r = self.reservation
        if r is None:
            return frozenset()
        if job.max_runtime_s is not None and self.now + job.max_runtime_s <= r.start_at:
            return frozenset()
        return self._reserved

    def _find(self, job: PendingJob, shape: Shape, avoid: frozenset[int]) -> Fit | None:
        allowed = self.quota.allowed(job, shape)
        return Search(self.st, shape, avoid).find(allowed) if allowed else None

    def _place(self, job: PendingJob, shape: Shape, fit: Fit, victims: list[Holding]) -> Decision:
        stopped = []
        for h in victims:
            self.evicted.add(h.job_id)
            self.quota.evicted(h)
            stopped.append(Preemption(h.job_id, job.id, victim_reason(job, h, shape.what)))
        if victims:  # capacity came back: what did not fit may fit now
            self._no_fit.clear()
            self._no_preempt.clear()
        c = fit.gpu_class
        need = shape.gpus * shape.replicas
        # Only a preemptible job borrows (quota.allowed kept the others within their guarantee
        # and the unguaranteed pool).
        borrowed = (
            self.quota.enabled
            and job.preemptible
            and need > 0
            and not self.quota.within(job.workspace, c, need)
        )
        placement, holding = commit(
            self.st, job, shape, fit, self.now, self.config.first_master_port, borrowed
        )
        self.quota.charge(holding)
        self.placed.append(holding)
        self.placements.append(placement)
        self.preemptions.extend(stopped)
        return Decision(job.id, Outcome.PLACED, None, placement, tuple(stopped))

    def _unplaced(self, job: PendingJob, reason: str, outcome: Outcome) -> Decision:
        self.pending_reasons[job.id] = reason
        if outcome == Outcome.UNRESOLVABLE:
            self.never_fits[job.id] = reason
        return Decision(job.id, outcome, reason)

    # -- preemption and backfill -----------------------------------------------------

    def _preempt(
        self, job: PendingJob, shape: Shape, quota_blocked: bool, avoid: frozenset[int]
    ) -> Decision | str:
        key = (shape.key, job.priority, job.workspace, job.preemptible, quota_blocked, bool(avoid))
        known = self._no_preempt.get(key)
        if known is not None:
            return known
        if self._preemptor is None:
            self._preemptor = Preemptor(
                self.st, self.quota, self.running.pools, self.evicted, self.config, self.now
            )
        p = self._preemptor
        victims = p.candidates(job, shape)
        note = ""
        if victims and quota_blocked:
            # Preempting frees GPUs, not guarantee: its non-preemptible GPUs stay as they are.
            note = reasons.COULD_PREEMPT_BUT_QUOTA.format(
                victims=len(victims), workspace=job.workspace
            )
        elif victims:
            chosen = None
            if p.could_hold(shape, victims):
                chosen = p.choose(victims, lambda: self._find(job, shape, avoid))
            if chosen is not None:
                fit, stopped = chosen
                return self._place(job, shape, fit, stopped)
            note = reasons.PREEMPTION_WOULD_NOT_FIT.format(victims=len(victims))
        self._no_preempt[key] = note
        return note

    def _reserve(self, job: PendingJob, shape: Shape) -> str:
        self._reservation_tried = True
        # The running jobs' ends in the gang's GPU classes (copies of the kept heaps) and
        # this round's gangs' ends. A job of two classes may come twice: _Ends skips it.
        classes = set(shape.classes)
        kept = self.running.ends
        heaps = list(kept.values()) if CPU_ONLY in classes else [kept.get(c, []) for c in classes]
        ends = [e for heap in heaps for e in heap]
        ends += [
            (h.expected_end, h.job_id, -1, h)
            for h in self.placed
            if h.expected_end is not None
            and (CPU_ONLY in classes or not classes.isdisjoint(h.gpu_classes))
        ]
        heapq.heapify(ends)

        def counts(h: Holding) -> bool:
            return h.job_id not in self.evicted and (h.placed_now or self.running.current(h))

        def find() -> Fit | None:
            return self._find(job, shape, frozenset())

        found = shadow(self.st, ends, counts, find, self.now)  # leaves the state as it was
        if found is None:
            return reasons.NO_ESTIMATE
        start_at, fit = found
        nodes = tuple(sorted({node for node, _ in fit.nodes}))
        self._reserved = frozenset(nodes)
        self.reservation = Reservation(job.id, start_at, tuple(self.st.nodes[n].id for n in nodes))
        where = explain.where(self.st, fit)
        return reasons.RESERVED.format(eta=reasons.eta(start_at - self.now), where=where)

    def _totals(self) -> Totals:
        return Totals(self.index.gpus, self.index.mcpus, self.index.memory_mb)

    def _within(self, job: PendingJob) -> bool:
        if not self.quota.enabled or job.demand.gpus == 0:
            return True
        shape = self._shape(job)
        need = shape.gpus * shape.replicas
        within = self.quota.within if job.preemptible else self.quota.firm_within
        return any(within(job.workspace, c, need) for c in shape.classes)
