"""ETTR of one large training job under a failure profile, recovered by corral's own rules.

```
 per node: NodeFailures (failures.py, seeded) ─► next failure of any node in the gang
      │ how it shows (MANIFEST): host down · GPU Xid · hang the health check pins on a node
      │                          · anonymous hang · error in the script · GPU throttle
      │ GPU causes: a drawn Xid/signal judged by core.health (gpu_faults.py) ─► repair
      ▼ detected after detect_s (hangs: hang_detect_s)
 core.recovery.decide(snapshot, now) ─► HOLD (recheck) · RESTART · WAIT (for repairs) · GIVE_UP
      │ excluded nodes go to repair and come back as spares: the failed node after its
      │ repair (core.health's: reboot ~10 min, inspect-hardware the profile's hardware
      │ time), and not before recovery's exclusion for the job ends
      ▼
 next attempt: restart_s of start-up, then compute in intervals of tau, each followed by a
 blocking checkpoint of checkpoint_cost_s; a failure loses the work since the last one
      ▼
 core.recovery.goodput(attempts) ─► ETTR and lost time by cause
```

The job holds `nodes` nodes; `spares` more stand by. A failure in a gang node ends the
attempt unless it happened while the job was down anyway (then the node is just swapped).
Errors in the script are charged to `max_restarts`, which is set high: the profile's
"software bug" interruptions are the job's own, and the run must go on to be measured.

GPU faults (gpu_faults.GPU_FAULTS): a throttled GPU (the thermal cause) is degraded in
core.health's words and still takes work, so it does not end the attempt: it is counted in
`degraded` and the job carries on (its slowdown is not modelled). Silent data corruption
shows in no signal; the job's own checks raise, so it ends the attempt as an error in the
script and the node stays. Every other GPU fault crashes the process with its Xid, and the
node leaves the pool when core.health's verdict takes it out of work.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from corral.core.goodput import AttemptRecord, Goodput, goodput
from corral.core.recovery import (
    AttemptState,
    Cause,
    Decision,
    JobRecoverySpec,
    NodeView,
    RecoveryMemory,
    RecoveryPolicy,
    ReplicaPhase,
    ReplicaView,
    Signal,
    Verdict,
    decide,
    plan_next_attempt,
    young_interval_s,
)
from corral.core.states import NodeCondition
from corral.sim.failures import DAY_S, LLAMA3_405B, Failure, FailureProfile, NodeFailures
from corral.sim.gpu_faults import Consequence


class Shows(Enum):
    """How a failure reaches corral."""

    HOST_DOWN = "host down"  # heartbeats stop
    GPU_XID = "gpu xid"  # the process crashes; the agent sees the Xid
    NODE_HANG = "node hang"  # collectives hang; a health check names the node (NIC, link)
    HANG = "hang"  # collectives hang; nothing names a node
    SCRIPT = "script"  # the training code raises
    THROTTLE = "throttle"  # the GPU slows down; nothing crashes


MANIFEST: dict[str, Shows] = {
    "faulty GPU": Shows.GPU_XID,
    "GPU HBM3 memory": Shows.GPU_XID,
    "software bug": Shows.SCRIPT,
    "network switch/cable": Shows.NODE_HANG,
    "host maintenance": Shows.HOST_DOWN,
    "GPU SRAM memory": Shows.GPU_XID,
    "GPU system processor": Shows.GPU_XID,
    "NIC": Shows.NODE_HANG,
    "NCCL watchdog timeout": Shows.HANG,
    "silent data corruption": Shows.SCRIPT,  # no signal: the job's own checks raise
    "GPU thermal interface/sensor": Shows.THROTTLE,
    "SSD": Shows.HOST_DOWN,
    "power supply": Shows.HOST_DOWN,
    "server chassis": Shows.HOST_DOWN,
    "IO expansion board": Shows.HOST_DOWN,
    "dependency": Shows.SCRIPT,
    "CPU": Shows.HOST_DOWN,
    "system memory": Shows.HOST_DOWN,
}


@dataclass(frozen=True)
class EttrOptions:
    nodes: int = 2048
    gpus_per_node: int = 8
    spares: int = 16
    days: float = 54.0
    detect_s: float = 10.0  # host down, Xid, crash: heartbeat / exit report to decision
    hang_detect_s: float = 60.0  # hangs: the job's progress_timeout
    restart_s: float = 30.0  # decision to first new step: place, start, load checkpoint
    checkpoint_cost_s: float = 10.0  # blocking part of one checkpoint
    checkpoint_interval_s: float | None = None  # compute between checkpoints; None: Young
    max_restarts: int = 1000
    seed: int = 1
    profile: FailureProfile = LLAMA3_405B
    policy: RecoveryPolicy = field(default_factory=RecoveryPolicy)


@dataclass(frozen=True)
class Outage:
    """A failed node out of the pool: from its failure to its return as a spare."""

    node: str
    cause: str  # the profile's cause name
    repair: str  # core.health's repair for a GPU fault; "" for other causes
    at: float
    back_at: float


@dataclass(frozen=True)
class EttrResult:
    goodput: Goodput
    checkpoint_interval_s: float
    mtbf_s: float
    interruptions: Counter[str]  # by the profile's cause name
    verdicts: Counter[str]
    given_up: str | None
    degraded: Counter[str] = field(default_factory=Counter)  # faults the job ran on through
    repairs: Counter[str] = field(default_factory=Counter)  # core.health's, per GPU fault
    outages: tuple[Outage, ...] = ()

    @property
    def ettr(self) -> float:
        return self.goodput.ettr


def job_mtbf_s(profile: FailureProfile, nodes: int, gpus_per_node: int) -> float:
    """Mean time between failures of a job on `nodes` nodes, from the profile's rates."""
    rate = sum(profile.rate_per_s(c, gpus_per_node) for c in profile.causes) * nodes
    return math.inf if rate <= 0 else 1.0 / rate


def simulate(options: EttrOptions) -> EttrResult:
    return _Run(options).run()


@dataclass
class _Attempt:
    started_at: float
    work_from: float
    start_step: int


class _Run:
    def __init__(self, o: EttrOptions) -> None:
        self.o = o
        self.horizon = o.days * DAY_S
        self.mtbf = job_mtbf_s(o.profile, o.nodes, o.gpus_per_node)
        self.tau = o.checkpoint_interval_s or young_interval_s(o.checkpoint_cost_s, self.mtbf)
        names = [f"n{i:05d}" for i in range(o.nodes + o.spares)]
        self.streams = {n: NodeFailures(o.profile, n, o.gpus_per_node, o.seed) for n in names}
        self.gang: list[str] = names[: o.nodes]
        self.spares: list[str] = names[o.nodes :]
        self.repairs: list[tuple[float, str]] = []  # (back at, node)
        self.pending: list[tuple[float, str, int, Failure]] = []  # (at, node, generation, f)
        self.generation: dict[str, int] = dict.fromkeys(names, 0)
        self.memory = RecoveryMemory()  # recovery's, across attempts
        self.attempt = 1
        self.interruptions: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.degraded: Counter[str] = Counter()
        self.repairs_asked: Counter[str] = Counter()
        self.outages: list[Outage] = []
        self.spec = JobRecoverySpec(
            replicas=o.nodes, max_restarts=o.max_restarts, progress_timeout_s=o.hang_detect_s
        )

    def run(self) -> EttrResult:
        for node in self.gang:
            self._arm(node, 0.0)
        attempts: list[AttemptRecord] = []
        current = _Attempt(0.0, self.o.restart_s, 0)
        given_up: str | None = None
        running = True
        while self.pending:
            at, node, gen, failure = heapq.heappop(self.pending)
            if at >= self.horizon:
                break
            if gen != self.generation[node] or node not in self.gang:
                continue  # the node left the gang since this was drawn
            name = self.o.profile.causes[failure.cause].name
            shows = MANIFEST.get(name, Shows.HOST_DOWN)
            if failure.fault is not None:
                self.repairs_asked[failure.fault.repair.value] += 1
            if shows is Shows.THROTTLE:
                self.degraded[name] += 1  # degraded: still takes work, the attempt goes on
                self._arm(node, at)
                continue
            if at < current.started_at:
                self._swap_if_broken(node, shows, at, failure)  # the job was down anyway
                continue
            self.interruptions[name] += 1
            decided_at, decision = self._decide(current, node, shows, at)
            record, step = self._end(current, at, decided_at, decision)
            attempts.append(record)
            running = False
            if decision.verdict is Verdict.GIVE_UP:
                given_up = decision.reason
                break
            repaired = at + failure.repair_s
            excluded = decision.memory.excluded
            for bad in sorted(set(excluded) - set(self.memory.excluded)):
                # Back once repaired (the failed node) and no longer excluded.
                if bad == node:
                    self._out(node, name, failure, max(repaired, excluded[bad]))
                else:
                    self._leave(bad, max(at, excluded[bad]))
            self.memory = decision.memory
            if node in self.gang:
                if _stays(shows, failure.fault):
                    self._arm(node, at)  # nothing wrong with the machine: it stays
                else:
                    self._out(node, name, failure, repaired)  # though recovery named no node
            start = self._capacity(decided_at, decision)
            if start >= self.horizon:
                break
            self._fill(start)
            self.attempt += 1
            current = _Attempt(start, start + self.o.restart_s, step)
            running = True
        end = self.horizon
        if running:
            attempts.append(self._final(current, end))
        return EttrResult(
            goodput=goodput(attempts, end),
            checkpoint_interval_s=self.tau,
            mtbf_s=self.mtbf,
            interruptions=self.interruptions,
            verdicts=self.verdicts,
            given_up=given_up,
            degraded=self.degraded,
            repairs=self.repairs_asked,
            outages=tuple(self.outages),
        )

    # -- recovery -------------------------------------------------------------------

    def _decide(self, a: _Attempt, node: str, shows: Shows, at: float) -> tuple[float, Decision]:
        hang = shows in (Shows.HANG, Shows.NODE_HANG)
        now = at + (self.o.hang_detect_s if hang else self.o.detect_s)
        while True:
            decision = self._decision(a, node, shows, at, now)
            self.verdicts[decision.verdict.value] += 1
            if decision.verdict is not Verdict.HOLD:
                return now, decision
            assert decision.recheck_at is not None and decision.recheck_at > now
            now = decision.recheck_at

    def _decision(self, a: _Attempt, node: str, shows: Shows, at: float, now: float) -> Decision:
        step = self._compute_done(a, at)
        phase, code, lost = ReplicaPhase.RUNNING, None, False
        # Only a hang shows as missing progress; a crash shows as the crash.
        hang = shows in (Shows.HANG, Shows.NODE_HANG)
        progress_at = max(at, a.started_at) if hang else now
        signals: tuple[Signal, ...] = ()
        if shows is Shows.HOST_DOWN:
            phase, lost = ReplicaPhase.LOST, True
        elif shows is Shows.GPU_XID:
            phase, code = ReplicaPhase.FAILED, 139
            signals = (Signal(Cause.GPU_XID, at, node, "simulated"),)
        elif shows is Shows.SCRIPT:
            phase, code = ReplicaPhase.FAILED, 1
        healthy = NodeView(NodeCondition.READY, now)
        nodes = dict.fromkeys(self.gang, healthy)
        nodes.update(dict.fromkeys(self.spares, healthy))
        if lost:
            nodes[node] = NodeView(NodeCondition.LOST, at)
        elif shows is Shows.NODE_HANG:
            nodes[node] = NodeView(NodeCondition.UNHEALTHY, now)
        replicas = tuple(
            ReplicaView(
                rank=i,
                node=n,
                phase=phase if n == node else ReplicaPhase.RUNNING,
                exit_code=code if n == node else None,
                finished_at=at if n == node and phase is not ReplicaPhase.RUNNING else None,
                step=step,
                progress_at=progress_at,
            )
            for i, n in enumerate(self.gang)
        )
        state = AttemptState(
            attempt=self.attempt,
            started_at=a.started_at,
            spec=self.spec,
            replicas=replicas,
            nodes=nodes,
            signals=signals,
            memory=self.memory,
            start_step=a.start_step,
            slots=dict.fromkeys([*self.gang, *self.spares], 1),
        )
        return decide(state, now, self.o.policy)

    def _capacity(self, now: float, decision: Decision) -> float:
        """When the next attempt can start: now, or once repairs bring enough nodes back."""
        verdict, failed_at = decision.verdict, now
        while verdict is Verdict.WAIT:
            if not self.repairs:
                return math.inf
            now = max(now, self.repairs[0][0])
            while self.repairs and self.repairs[0][0] <= now:
                self.spares.append(heapq.heappop(self.repairs)[1])
            usable = [*self.gang, *self.spares]
            nxt = plan_next_attempt(
                self.spec,
                dict.fromkeys(usable, 1),
                {n: NodeView() for n in usable},
                self.memory.excluded_at(now),
                failed_at,
                now,
                self.o.policy,
            )
            verdict = nxt.verdict
        return now

    # -- the gang ---------------------------------------------------------------------

    def _arm(self, node: str, t: float) -> None:
        self.generation[node] += 1
        failure = self.streams[node].next(t)
        if failure is not None:
            heapq.heappush(self.pending, (failure.at, node, self.generation[node], failure))

    def _leave(self, node: str, back_at: float) -> None:
        if node in self.gang:
            self.gang.remove(node)
        elif node in self.spares:
            self.spares.remove(node)
        self.generation[node] += 1
        heapq.heappush(self.repairs, (back_at, node))

    def _out(self, node: str, cause: str, failure: Failure, back_at: float) -> None:
        repair = failure.fault.repair.value if failure.fault is not None else ""
        self.outages.append(Outage(node, cause, repair, failure.at, back_at))
        self._leave(node, back_at)

    def _fill(self, t: float) -> None:
        while self.repairs and self.repairs[0][0] <= t:
            self.spares.append(heapq.heappop(self.repairs)[1])
        while len(self.gang) < self.o.nodes and self.spares:
            node = self.spares.pop(0)
            self.gang.append(node)
            self._arm(node, t)

    def _swap_if_broken(self, node: str, shows: Shows, at: float, failure: Failure) -> None:
        if _stays(shows, failure.fault):
            self._arm(node, at)
            return
        name = self.o.profile.causes[failure.cause].name
        self._out(node, name, failure, at + failure.repair_s)
        self._fill(at)

    # -- accounting -------------------------------------------------------------------

    def _compute_done(self, a: _Attempt, t: float) -> int:
        """Seconds of compute since the attempt began working (its 'step'), from start."""
        if t <= a.work_from:
            return a.start_step
        cycle = self.tau + self.o.checkpoint_cost_s
        k, into = divmod(t - a.work_from, cycle)
        return a.start_step + int(k * self.tau + min(into, self.tau))

    def _end(
        self, a: _Attempt, at: float, decided_at: float, d: Decision
    ) -> tuple[AttemptRecord, int]:
        cycle = self.tau + self.o.checkpoint_cost_s
        k = max(0, math.floor((at - a.work_from) / cycle)) if at > a.work_from else 0
        saved_step = a.start_step + int(k * self.tau)
        record = AttemptRecord(
            started_at=a.started_at,
            ended_at=decided_at,
            end_cause=d.cause,
            start_step=a.start_step,
            first_step_at=min(a.work_from, at),
            step=self._compute_done(a, at),
            checkpoint_step=saved_step if k else None,
            checkpoint_at=a.work_from + k * cycle if k else None,
            checkpoint_overhead_s=k * self.o.checkpoint_cost_s,
        )
        return record, saved_step

    def _final(self, a: _Attempt, end: float) -> AttemptRecord:
        cycle = self.tau + self.o.checkpoint_cost_s
        k = max(0, math.floor((end - a.work_from) / cycle)) if end > a.work_from else 0
        return AttemptRecord(
            started_at=a.started_at,
            start_step=a.start_step,
            first_step_at=min(a.work_from, end),
            step=self._compute_done(a, end),
            checkpoint_overhead_s=k * self.o.checkpoint_cost_s,
        )


def _stays(shows: Shows, fault: Consequence | None) -> bool:
    """Whether the failed node stays in the pool: for a GPU fault, core.health's verdict
    says; otherwise only a fault of the job (script, anonymous hang) leaves the node be."""
    if fault is not None:
        return not fault.leaves_pool
    return shows in (Shows.SCRIPT, Shows.HANG)
