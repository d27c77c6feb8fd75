"""The event loop: arrivals, placement rounds, completions, failures, repairs, preemptions.

    ARRIVE ─► queue ─► ROUND: snapshot ─► policy(snapshot, now) ─► plan
                         ▲                                        │ preempt victims (requeue,
                         │                                        │   lose work since their
    COMPLETE / FAIL / REPAIR ◄── virtual clock (events.py) ◄──────┘   checkpoint), start gangs

A round runs only when something changed (a job arrived, ended or was interrupted, a node
came back), after every event of its instant — or, with `round_s > 0`, at the next multiple
of `round_s`, like a controller that wakes up periodically. A plan is checked before it is
applied: a plan that over-commits a node is a scheduler bug and stops the run (PlanError).

With pools (`supply`, sim/supply.py) the fleet is not fixed: every round ends with the
fleet autoscaler's decision (core.pools.decide); its launches join `boot` seconds later
(JOIN), idle nodes leave, and it asks to be woken (SUPPLY) when a decision could change
with nothing else happening (an idle node passing its grace period).

`run(progress=...)` calls back every PROGRESS_EVERY events (and once at the end) with a
`Progress`: the loop stays pure — no clock reads, no output — and the shell draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from corral.core.health import Health
from corral.sim.cluster import Cluster
from corral.sim.events import EventQueue, Kind
from corral.sim.failures import Failure, FailureProfile, NodeFailures
from corral.sim.metrics import Fragmentation, Series, workload_mix
from corral.sim.policies import Policy
from corral.sim.state import JobRun, PlanError, check_gang
from corral.sim.supply import Supply
from corral.sim.workload import Job
from corral.sim.world import Counters, World

ROUNDS_PER_INSTANT = 4  # rounds re-run at one instant after preemptions free room
PROGRESS_EVERY = 64  # events between progress callbacks: cheap next to one round


@dataclass(frozen=True)
class Progress:
    """How far a run is, in its own terms (never wall-clock time)."""

    events: int  # events handled so far
    now_s: float  # simulated time reached
    arrived: int  # jobs arrived so far
    settled: int  # jobs done or dropped
    jobs: int
    horizon_s: float | None  # where the run stops if not drained first (fill runs)
    finished: bool = False

    @property
    def fraction(self) -> float:
        """Share of the run done: each job arrives then settles (a fill run ends at its
        horizon instead)."""
        if self.finished:
            return 1.0
        if self.horizon_s:
            return min(1.0, self.now_s / self.horizon_s)
        return (self.arrived + self.settled) / (2 * self.jobs) if self.jobs else 1.0


ProgressHook = Callable[[Progress], None]


@dataclass(frozen=True)
class EngineConfig:
    policy: Policy
    checkpoint_interval_s: float | None = 1800.0  # None: a job never checkpoints
    round_s: float = 0.0
    failures: FailureProfile | None = None
    seed: int = 0
    # Fill experiments: a job the round after its arrival does not place is dropped.
    drop_unplaced: bool = False
    until_s: float | None = None


@dataclass
class Outcome:
    jobs: list[JobRun]
    series: Series
    counters: Counters
    pending_reasons: dict[str, str]  # from the last round: why the jobs left were waiting
    end_s: float = 0.0  # the virtual time the run stopped at


class Engine:
    def __init__(
        self,
        cluster: Cluster,
        jobs: list[Job],
        config: EngineConfig,
        supply: Supply | None = None,
    ) -> None:
        self.config = config
        self.queue = EventQueue()
        self.supply = supply
        absent = supply.absent_at_start() if supply is not None else ()
        self.world = World(cluster, jobs, config.checkpoint_interval_s, absent)
        self.wakes: set[float] = set()  # SUPPLY events queued (their times)
        self.frag = Fragmentation(workload_mix(jobs), len(cluster.nodes))
        self.series = Series()
        self.arrivals_left = len(jobs)
        self.round_at: float | None = None
        self.rounds_now = 0
        self.last_round = -math.inf
        self.reasons: dict[str, str] = {}
        self.processes: list[NodeFailures] = []
        self.next_failure: list[Failure | None] = []

    def run(self, progress: ProgressHook | None = None) -> Outcome:
        w = self.world
        for run in w.jobs:
            self.queue.push(run.job.submit_s, Kind.ARRIVE, run.index)
        if self.config.failures is not None:
            for i, n in enumerate(w.nodes):
                self.processes.append(
                    NodeFailures(self.config.failures, n.spec.id, n.spec.gpus, self.config.seed)
                )
                self.next_failure.append(None)
                self._schedule_failure(i, 0.0)
        if self.supply is not None:
            self._wake(0.0)  # pools below their min grow at once
        until = math.inf if self.config.until_s is None else self.config.until_s
        events = 0
        while self.queue:
            # Done when no job can arrive, run or be helped by a repair; jobs still queued
            # then fit nowhere the policy would put them, and are reported unfinished.
            # With pools, the autoscaler's own events (joins, releases) run out too.
            idle = self.arrivals_left == 0 and not w.running and not w.down
            if idle and self.round_at is None and self.supply is None:
                break
            if (self.queue.peek_time() or 0.0) > until:
                break
            event = self.queue.pop()
            now = event.time
            if event.kind is Kind.ARRIVE:
                self.arrivals_left -= 1
                w.arrive(w.jobs[event.subject])
                self._want_round()
            elif event.kind is Kind.COMPLETE:
                run = w.jobs[event.subject]
                if run.state == "running" and run.attempt == event.tag:
                    w.complete(run, now)
                    self._want_round()
                # else: the attempt this completion belonged to was interrupted
            elif event.kind is Kind.FAIL:
                self._fail(event.subject, event.tag)
            elif event.kind is Kind.REPAIR:
                w.node_up(event.subject)
                self._schedule_failure(event.subject, now)
                self._want_round()
            elif event.kind is Kind.JOIN:
                assert self.supply is not None
                if self.supply.joined(event.subject, event.tag, now):
                    w.join(event.subject, now)
                    self._want_round()
            elif event.kind is Kind.SUPPLY:
                self.wakes.discard(now)
                self._want_round()
            else:
                self._round()
            if self.queue.peek_time() != now:
                self._sample()
            events += 1
            if progress is not None and events % PROGRESS_EVERY == 0:
                progress(self._progress(events))
        if progress is not None:
            progress(self._progress(events, finished=True))
        return Outcome(w.jobs, self.series, w.counters, self.reasons, self.queue.now)

    def _progress(self, events: int, finished: bool = False) -> Progress:
        return Progress(
            events=events,
            now_s=self.queue.now,
            arrived=len(self.world.jobs) - self.arrivals_left,
            settled=self.world.settled,
            jobs=len(self.world.jobs),
            horizon_s=self.config.until_s,
            finished=finished,
        )

    def _want_round(self) -> None:
        if self.round_at is not None:
            return
        now, step = self.queue.now, self.config.round_s
        self.round_at = max(now, math.ceil(now / step) * step) if step > 0 else now
        self.queue.push(self.round_at, Kind.ROUND)

    def _schedule_failure(self, node: int, up_since: float) -> None:
        failure = self.processes[node].next(up_since)
        self.next_failure[node] = failure
        if failure is not None:
            self.queue.push(failure.at, Kind.FAIL, node, failure.cause)

    def _fail(self, node: int, cause: int) -> None:
        failure, profile = self.next_failure[node], self.config.failures
        assert failure is not None and profile is not None
        c = self.world.counters
        c.node_failures += 1
        c.failures_by_cause[profile.causes[cause].name] += 1
        fault = failure.fault
        if fault is not None and fault.health == Health.DEGRADED and not fault.leaves_pool:
            # A slowdown (thermal): core.health keeps the node schedulable and its work runs
            # on, slower (the slowdown is not modelled). The node's next failure is drawn.
            self._schedule_failure(node, self.queue.now)
            return
        c.interrupted_attempts += self.world.node_down(node, self.queue.now)
        self.queue.push(self.queue.now + failure.repair_s, Kind.REPAIR, node)
        self._want_round()

    def _round(self) -> None:
        w, now = self.world, self.queue.now
        self.round_at = None
        if w.pending:
            self._place(now)
        if self.supply is not None:
            self._supply(now)

    def _wake(self, at: float) -> None:
        if at not in self.wakes:
            self.wakes.add(at)
            self.queue.push(at, Kind.SUPPLY)

    def _supply(self, now: float) -> None:
        """The fleet autoscaler's turn, after the scheduler's: launch, release, wake later."""
        assert self.supply is not None
        w = self.world
        tick, leaving = self.supply.tick(now, w.nodes, list(w.pending.values()))
        for i in leaving:
            w.leave(i)
        for at, node, launch in tick.joins:
            self.queue.push(at, Kind.JOIN, node, launch)
        if tick.wake_at is not None:
            self._wake(tick.wake_at)

    def _place(self, now: float) -> None:
        w = self.world
        self.rounds_now = self.rounds_now + 1 if self.last_round == now else 1
        self.last_round = now
        plan = self.config.policy(w.snapshot(now), now)
        w.counters.rounds += 1
        self.reasons = plan.pending_reasons
        for p in plan.preemptions:
            victim = w.job_by_id.get(p.job_id)
            if victim is None or victim.state != "running":
                raise PlanError(f"preemption of {p.job_id}, which is not running")
            w.counters.preemptions += 1
            w.interrupt(victim, now)
        for gang in plan.placements:
            run = w.job_by_id.get(gang.job_id)
            if run is None or run.state != "pending":
                raise PlanError(f"placement of {gang.job_id}, which is not pending")
            check_gang(gang, run, w.nodes, w.node_index)
            w.start(run, gang, now)
            if run.remaining_s < math.inf:
                self.queue.push(now + run.remaining_s, Kind.COMPLETE, run.index, run.attempt)
        if self.config.drop_unplaced:
            w.drop_pending()
        if plan.preemptions and w.pending and self.rounds_now < ROUNDS_PER_INSTANT:
            self._want_round()  # the victims' room may serve jobs this plan did not place

    def _sample(self) -> None:
        w = self.world
        for i in w.changed:
            n = w.nodes[i]
            free_cpus = n.spec.cpus - n.used_cpus
            self.frag.update(i, n.free_models(), free_cpus, n.spec.memory_mb - n.used_memory_mb)
        w.changed.clear()
        self.series.add(
            self.queue.now, w.used_gpus, w.up_gpus, w.queued_gpus, w.arrived_gpus, self.frag.total
        )
