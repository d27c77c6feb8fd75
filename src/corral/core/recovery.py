"""Recovery rules for training jobs, and goodput accounting. Pure: snapshot + `now` in, a
decision out; no I/O, no clock reads.

```
 AttemptState + now ─► classify ──► healthy ──────────────────────────► CONTINUE
                          │    └──► a bare non-zero exit, not yet blamed ► HOLD (stop the gang,
                          │          (waiting out the attribution window)       recheck later)
                          ▼
                    cause: infrastructure (node lost, GPU Xid, unhealthy node, port in
                           use, exit status unknown, collective timeout, hang) or user
                           (non-zero exit and no infrastructure signal)
                          │ charge it: user → spec.max_restarts
                          │            infrastructure → policy.max_infra_restarts
                          ▼
                    budget spent? ─► GIVE_UP
                          │ no: exclude the implicated nodes, count the capacity left
                          ▼
                    plan_next_attempt ─► RESTART (full size, or shrunk if elastic)
                                     └─► WAIT (for capacity / for a replacement node)
```

Infrastructure failures are not the script's fault, so they do not spend `max_restarts`;
they spend a separate, generous cap (`RecoveryPolicy.max_infra_restarts`, default 1,000 —
Llama 3 405B saw 419 interruptions in 54 days), which only keeps a job on a hopeless fleet
from restarting forever. Hangs and collective timeouts name no node, so a script that
deadlocks would look like infrastructure each time: after `max_hang_streak` such attempts
in a row without a new step the job gives up.

A non-zero exit is blamed on the script only once the infrastructure has had its say: every
node of the gang has been heard from since the exit, and `attribution_window_s` has passed.
A dead peer makes the survivors exit non-zero within milliseconds, well before its node is
declared lost; without the wait that survivor's exit would be charged to the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from corral.core.states import NodeCondition


class Cause(Enum):
    """Why an attempt ended."""

    NODE_LOST = "node_lost"
    GPU_XID = "gpu_xid"
    NODE_UNHEALTHY = "node_unhealthy"
    # Another process held the port corral gave a replica (its agent found it): the next
    # attempt gets another port, as the node now reports this one in use.
    PORT_IN_USE = "port_in_use"
    EXIT_UNKNOWN = "exit_unknown"  # the agent lost track of the replica (shim killed, reboot)
    COLLECTIVE_TIMEOUT = "collective_timeout"
    HANG = "hang"
    USER_ERROR = "user_error"
    PREEMPTED = "preempted"  # for goodput: the scheduler took the GPUs back

    @property
    def infrastructure(self) -> bool:
        return self not in (Cause.USER_ERROR, Cause.PREEMPTED)


# When several causes show at once, the first here is the one reported: the most specific.
PRECEDENCE = (
    Cause.NODE_LOST,
    Cause.GPU_XID,
    Cause.NODE_UNHEALTHY,
    Cause.PORT_IN_USE,
    Cause.EXIT_UNKNOWN,
    Cause.COLLECTIVE_TIMEOUT,
    Cause.HANG,
)
_CORDON = frozenset({Cause.GPU_XID, Cause.NODE_UNHEALTHY})  # the hardware is suspect for all


class ReplicaPhase(Enum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # exited by itself, non-zero (or with an unknown status)
    STOPPED = "stopped"  # stopped by corral
    LOST = "lost"


class Verdict(Enum):
    CONTINUE = "continue"  # nothing is wrong
    HOLD = "hold"  # a replica failed; the cause is not known yet: stop the gang, decide later
    RESTART = "restart"  # end the attempt and start the next one now
    WAIT = "wait"  # end the attempt; the next one waits for capacity
    GIVE_UP = "give_up"  # end the job `failed`


@dataclass(frozen=True)
class Signal:
    """An infrastructure fact reported about the attempt (a GPU Xid, an NCCL timeout ...)."""

    cause: Cause
    at: float
    node: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.cause.infrastructure:
            raise ValueError(f"a signal reports an infrastructure cause, not {self.cause.value}")


@dataclass(frozen=True)
class ReplicaView:
    rank: int
    node: str
    phase: ReplicaPhase
    exit_code: int | None = None
    finished_at: float | None = None
    step: int | None = None
    progress_at: float | None = None  # when its step last advanced
    # An infrastructure cause its node found for its failure (Cause.PORT_IN_USE).
    cause: Cause | None = None


@dataclass(frozen=True)
class RecoveryMemory:
    """What recovery remembers about a job across its attempts: attempts ended per cause
    (the budgets), the nodes it avoids and until when, and the run of attempts in a row
    that hung without a new step. The store keeps it as JSON (`to_json`/`from_json`)."""

    counts: Mapping[Cause, int] = field(default_factory=dict)
    excluded: Mapping[str, float] = field(default_factory=dict)  # node name -> until
    hang_streak: int = 0

    def excluded_at(self, now: float) -> dict[str, float]:
        """The nodes still avoided at `now`."""
        return {n: until for n, until in self.excluded.items() if until > now}

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {c.value: n for c, n in sorted(self.counts.items(), key=_by_value)},
            "excluded": dict(sorted(self.excluded.items())),
            "hang_streak": self.hang_streak,
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any] | None) -> RecoveryMemory:
        """Read what `to_json` wrote ({} or None: a job with no history). A cause this
        version does not know is dropped rather than failing the job's every decision."""
        raw = raw or {}
        known = {c.value: c for c in Cause}
        return RecoveryMemory(
            counts={known[c]: int(n) for c, n in raw.get("counts", {}).items() if c in known},
            excluded={str(n): float(t) for n, t in raw.get("excluded", {}).items()},
            hang_streak=int(raw.get("hang_streak", 0)),
        )


def _by_value(item: tuple[Cause, int]) -> str:
    return item[0].value


@dataclass(frozen=True)
class NodeView:
    condition: NodeCondition = NodeCondition.READY
    last_heard_at: float | None = None  # its last heartbeat or message


@dataclass(frozen=True)
class JobRecoverySpec:
    replicas: int
    max_restarts: int = 0
    min_replicas: int | None = None  # elastic: may run on as few as this many replicas
    progress_timeout_s: float | None = None  # no new step for this long is a hang


@dataclass(frozen=True)
class AttemptState:
    attempt: int
    started_at: float
    spec: JobRecoverySpec
    replicas: tuple[ReplicaView, ...]
    nodes: Mapping[str, NodeView] = field(default_factory=dict)
    signals: tuple[Signal, ...] = ()
    memory: RecoveryMemory = field(default_factory=RecoveryMemory)  # earlier attempts'
    start_step: int | None = None  # the checkpoint step this attempt resumed from
    # node -> replicas of this job that fit there once this attempt's own are released.
    slots: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryPolicy:
    max_infra_restarts: int = 1000
    attribution_window_s: float = 5.0
    recheck_s: float = 1.0  # while holding for a node to be heard from
    replacement_wait_s: float = 120.0  # elastic jobs: wait this long before shrinking
    exclude_s: float = 3600.0  # a node implicated in a failure is avoided this long
    max_hang_streak: int = 3


@dataclass(frozen=True)
class Decision:
    """What to do about an attempt. The server applies every field (services/settling.py,
    checked by tests/unit/test_decisions_applied.py)."""

    verdict: Verdict
    reason: str
    cause: Cause | None = None
    stop_replicas: bool = False
    replicas: int | None = None  # the next attempt's size (RESTART, WAIT)
    memory: RecoveryMemory = field(default_factory=RecoveryMemory)  # the job's, afterwards
    cordon: frozenset[str] = frozenset()  # nodes to cordon for every job
    recheck_at: float | None = None  # decide again then, even if nothing else changes


@dataclass(frozen=True)
class Finding:
    cause: Cause
    at: float
    what: str
    nodes: frozenset[str] = frozenset()  # implicated: excluded for this job
    cordon: frozenset[str] = frozenset()  # suspect hardware: kept from every job


@dataclass(frozen=True)
class Hold:
    """A replica failed and nothing blames the infrastructure yet: look again later."""

    what: str
    recheck_at: float


@dataclass(frozen=True)
class NextAttempt:
    verdict: Verdict  # RESTART or WAIT
    replicas: int
    reason: str
    recheck_at: float | None = None


def decide(state: AttemptState, now: float, policy: RecoveryPolicy | None = None) -> Decision:
    """What to do about this attempt now."""
    policy = policy or RecoveryPolicy()
    memory = state.memory
    excluded = memory.excluded_at(now)
    kept = RecoveryMemory(dict(memory.counts), dict(excluded), memory.hang_streak)
    found = classify(state, now, policy)
    if isinstance(found, Hold):
        return Decision(
            Verdict.HOLD,
            f"attempt {state.attempt}: {found.what}; waiting for the nodes to report "
            "before blaming the script",
            stop_replicas=True,
            memory=kept,
            recheck_at=found.recheck_at,
        )
    if found is None:
        return Decision(Verdict.CONTINUE, "", memory=kept, recheck_at=_hang_check_at(state, now))
    counts = dict(memory.counts)
    counts[found.cause] = counts.get(found.cause, 0) + 1
    streak = _hang_streak(state, found)
    cordon = found.cordon
    for node in found.nodes:
        excluded[node] = now + policy.exclude_s
    after = RecoveryMemory(counts, excluded, streak)
    head = f"attempt {state.attempt} ended: {found.what}"

    def ended(
        verdict: Verdict, reason: str, replicas: int | None = None, recheck_at: float | None = None
    ) -> Decision:
        return Decision(
            verdict,
            reason,
            cause=found.cause,
            stop_replicas=True,
            memory=after,
            cordon=cordon,
            replicas=replicas,
            recheck_at=recheck_at,
        )

    given_up = _budget_spent(state, found, counts, streak, policy)
    if cordon:
        # Said where the user looks: the node takes no new work from anyone until an
        # operator has looked at it.
        head += f"; cordoned {', '.join(sorted(cordon))} (suspect hardware)"
    if given_up is not None:
        return ended(Verdict.GIVE_UP, f"{head}; {given_up}")
    if found.cause.infrastructure:
        spent = sum(n for c, n in counts.items() if c.infrastructure)
        budget = f"infrastructure restart {spent}, not charged to max_restarts"
    else:
        budget = f"restart {counts[found.cause]} of {state.spec.max_restarts}"
    if found.nodes:
        hours = policy.exclude_s / 3600
        budget += f"; avoiding {', '.join(sorted(found.nodes))} for {hours:g}h"
    nxt = plan_next_attempt(state.spec, state.slots, state.nodes, excluded, found.at, now, policy)
    return ended(
        nxt.verdict,
        f"{head}; {budget}; {nxt.reason}",
        replicas=nxt.replicas,
        recheck_at=nxt.recheck_at,
    )


def classify(state: AttemptState, now: float, policy: RecoveryPolicy) -> Finding | Hold | None:
    """Why the attempt is over (a Finding), not yet known (Hold), or None: it is fine."""
    infra = _infrastructure_findings(state, now)
    if infra:
        primary = min(infra, key=lambda f: (PRECEDENCE.index(f.cause), f.at))
        implicated = frozenset().union(*(f.nodes for f in infra))
        suspect = frozenset().union(*(f.nodes for f in infra if f.cause in _CORDON))
        return Finding(primary.cause, primary.at, primary.what, implicated, suspect)
    failed = [
        r for r in state.replicas if r.phase is ReplicaPhase.FAILED and r.exit_code is not None
    ]
    if not failed:
        return None
    first = min(failed, key=lambda r: (r.finished_at if r.finished_at is not None else now, r.rank))
    at = first.finished_at if first.finished_at is not None else now
    what = f"replica {first.rank} exited with code {first.exit_code}"
    window_ends = at + policy.attribution_window_s
    silent = sorted(
        r.node
        for r in state.replicas
        if (h := state.nodes.get(r.node, NodeView()).last_heard_at) is None or h < at
    )
    if now < window_ends:
        return Hold(what, window_ends)
    if silent:
        return Hold(f"{what}; not heard from {', '.join(silent)} since", now + policy.recheck_s)
    return Finding(Cause.USER_ERROR, at, f"{what} (an error in the script)")


def _infrastructure_findings(state: AttemptState, now: float) -> list[Finding]:
    gang = {r.node for r in state.replicas}
    found: list[Finding] = []
    for r in state.replicas:
        node = state.nodes.get(r.node, NodeView())
        if r.phase is ReplicaPhase.LOST or node.condition is NodeCondition.LOST:
            at = r.finished_at if r.finished_at is not None else now
            found.append(Finding(Cause.NODE_LOST, at, f"node {r.node} lost", frozenset({r.node})))
        elif node.condition is NodeCondition.UNHEALTHY:
            found.append(
                Finding(Cause.NODE_UNHEALTHY, now, f"node {r.node} unhealthy", frozenset({r.node}))
            )
        if r.phase is ReplicaPhase.FAILED and r.cause is Cause.PORT_IN_USE:
            at = r.finished_at if r.finished_at is not None else now
            # The port is the problem, not the node: nobody is excluded.
            what = f"replica {r.rank} on {r.node} found its port held by another process"
            found.append(Finding(Cause.PORT_IN_USE, at, what))
        elif r.phase is ReplicaPhase.FAILED and r.exit_code is None:
            at = r.finished_at if r.finished_at is not None else now
            what = f"replica {r.rank} on {r.node} ended with no exit status"
            found.append(Finding(Cause.EXIT_UNKNOWN, at, what, frozenset({r.node})))
    for s in state.signals:
        if s.at < state.started_at or (s.node is not None and s.node not in gang):
            continue  # an earlier attempt's, or another job's node
        where = f" on {s.node}" if s.node else ""
        what = f"{s.cause.value.replace('_', ' ')}{where}" + (f": {s.detail}" if s.detail else "")
        found.append(Finding(s.cause, s.at, what, frozenset({s.node} if s.node else ())))
    hang = _hang(state, now)
    if hang is not None:
        found.append(hang)
    return found


def _hang(state: AttemptState, now: float) -> Finding | None:
    timeout = state.spec.progress_timeout_s
    if timeout is None:
        return None
    running = [r for r in state.replicas if r.phase is ReplicaPhase.RUNNING]
    last = {
        r.rank: state.started_at if r.progress_at is None else max(r.progress_at, state.started_at)
        for r in running
    }
    stalled = [r for r in running if now - last[r.rank] >= timeout]
    if not stalled:
        return None
    # A collective stalls every rank when any one stops, at the same step: the culprit
    # cannot be told then. Only a replica left behind by others still advancing is blamed.
    stalled_ranks = {r.rank for r in stalled}
    fresh = [r.step for r in running if r.rank not in stalled_ranks and r.step is not None]
    ahead = max(fresh, default=None)
    nodes = frozenset(
        r.node for r in stalled if ahead is not None and (r.step is None or r.step < ahead)
    )
    ranks = ", ".join(str(r.rank) for r in stalled)
    at = min(last[r.rank] for r in stalled) + timeout
    return Finding(Cause.HANG, at, f"no new step for {timeout:g}s (replicas {ranks})", nodes)


def _hang_check_at(state: AttemptState, now: float) -> float | None:
    """When a healthy attempt would count as hung if no replica reports a new step before
    then: a hang is only seen by looking again."""
    timeout = state.spec.progress_timeout_s
    if timeout is None:
        return None
    last = min(
        (
            state.started_at if r.progress_at is None else max(r.progress_at, state.started_at)
            for r in state.replicas
            if r.phase is ReplicaPhase.RUNNING
        ),
        default=now,
    )
    return max(now, last + timeout)


def _hang_streak(state: AttemptState, found: Finding) -> int:
    reached = max((r.step for r in state.replicas if r.step is not None), default=None)
    progressed = reached is not None and (state.start_step is None or reached > state.start_step)
    if progressed:
        return 0
    anonymous = found.cause in (Cause.HANG, Cause.COLLECTIVE_TIMEOUT) and not found.nodes
    streak = state.memory.hang_streak
    return streak + 1 if anonymous else streak


def _budget_spent(
    state: AttemptState,
    found: Finding,
    counts: Mapping[Cause, int],
    streak: int,
    policy: RecoveryPolicy,
) -> str | None:
    if not found.cause.infrastructure:
        limit = state.spec.max_restarts
        if counts[found.cause] > limit:
            return f"no restarts left (max_restarts: {limit})"
        return None
    spent = sum(n for c, n in counts.items() if c.infrastructure)
    if spent > policy.max_infra_restarts:
        return f"{spent - 1} infrastructure restarts already (cap {policy.max_infra_restarts})"
    if streak >= policy.max_hang_streak:
        return (
            f"{streak} attempts in a row stopped without a new step and no node to blame: "
            "likely a deadlock in the script"
        )
    return None


def plan_next_attempt(
    spec: JobRecoverySpec,
    slots: Mapping[str, int],
    nodes: Mapping[str, NodeView],
    excluded: Mapping[str, float],
    failed_at: float,
    now: float,
    policy: RecoveryPolicy,
) -> NextAttempt:
    """Restart at full size, shrink (elastic jobs, after the replacement wait), or wait.

    Call it again for a job that is waiting, at `recheck_at` or when capacity changes.
    """
    usable = {
        n: k
        for n, k in slots.items()
        if n not in excluded and nodes.get(n, NodeView()).condition is NodeCondition.READY
    }
    available = sum(max(0, k) for k in usable.values())
    want = spec.replicas
    if available >= want:
        return NextAttempt(Verdict.RESTART, want, "restarting from the last checkpoint")
    short = f"{available} of {want} replicas fit on healthy nodes"
    floor = spec.min_replicas
    if floor is None or available < floor:
        return NextAttempt(Verdict.WAIT, want, f"waiting for capacity: {short}")
    shrink_at = failed_at + policy.replacement_wait_s
    if now >= shrink_at:
        return NextAttempt(
            Verdict.RESTART,
            available,
            f"{short}; shrinking to {available} (min_replicas: {floor}) and restarting "
            "from the last checkpoint",
        )
    return NextAttempt(
        Verdict.WAIT,
        want,
        f"{short}; waiting up to {policy.replacement_wait_s:g}s for a replacement, "
        f"then shrinking to {available}",
        recheck_at=shrink_at,
    )


def young_interval_s(checkpoint_cost_s: float, mtbf_s: float) -> float:
    """Young's rule: the checkpoint interval that minimises expected lost time,
    sqrt(2 * checkpoint cost * MTBF) (Young, CACM 1974). The job's MTBF, not a node's."""
    if checkpoint_cost_s <= 0 or mtbf_s <= 0:
        raise ValueError("checkpoint cost and MTBF must be positive")
    return math.sqrt(2.0 * checkpoint_cost_s * mtbf_s)
