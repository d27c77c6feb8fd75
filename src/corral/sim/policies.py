"""The scheduling policies a simulation can compare, all `(Snapshot, now) -> PlacementPlan`.

- `corral`: the real scheduler. A run gets its own `corral.core.scheduler.Scheduler` (from
  `new_policy`), as the server's scheduler controller does: it keeps the fleet index and
  the running set between rounds, so a round costs what changed, not the whole fleet, and
  plans exactly as `corral.core.placement.place` does. `POLICIES["corral"]` is the
  stateless `place`, looked up at each call.
- `fifo`: strict FIFO with first fit. Jobs start in queue order; the first that does not
  fit blocks everything behind it (head-of-line blocking, no priorities).
- `fifo-backfill`: FIFO with EASY backfill, as in Slurm's backfill scheduler: the first
  job that does not fit gets a reservation at the earliest time the running jobs' expected
  ends free enough room (its shadow time); a later job may start now only if it fits and
  either ends by the shadow time (by its `max_runtime_s`) or leaves the reservation whole.
  Jobs with no estimate can only use room the reservation does not need. Like Slurm's
  `bf_max_job_test`, it looks at most BACKFILL_DEPTH jobs past the head each round.

Queue order is the order of `snapshot.pending`, which the simulator keeps as FIFO order
(submit time, then order in the workload) so that a baseline does not sort a queue of
tens of thousands of jobs every round. Only the head gets a pending reason.

The baselines ignore priorities, quotas, topology requirements and preemption: they are
the plain schedulers corral is measured against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from corral.core import placement
from corral.core.placement import (
    FIRST_MASTER_PORT,
    Demand,
    GangPlacement,
    PendingJob,
    PlacementPlan,
    ReplicaPlacement,
    Snapshot,
)
from corral.core.scheduler import Scheduler
from corral.sim.fit import Frees, first_fit

Policy = Callable[[Snapshot, float], PlacementPlan]
PolicyName = Literal["corral", "fifo", "fifo-backfill"]
POLICY_NAMES: tuple[PolicyName, ...] = ("corral", "fifo", "fifo-backfill")


def corral(snapshot: Snapshot, now: float) -> PlacementPlan:
    return placement.place(snapshot, now)


BACKFILL_DEPTH = 500


class _Ports:
    """Master ports in use per node, so two gangs mastered on one node differ."""

    def __init__(self, frees: Frees) -> None:
        self._frees = frees
        self._used: dict[str, set[int]] = {}

    def take(self, node_id: str) -> int:
        used = self._used.get(node_id)
        if used is None:
            free = self._frees.by_id(node_id)
            assert free is not None
            used = self._used[node_id] = set(free.node.used_ports)
        port = FIRST_MASTER_PORT
        while port in used:
            port += 1
        used.add(port)
        return port


def _gang(ports: _Ports, job: PendingJob, replicas: tuple[ReplicaPlacement, ...]) -> GangPlacement:
    return GangPlacement(job.id, replicas, ports.take(replicas[0].node_id))


def fifo(snapshot: Snapshot, now: float) -> PlacementPlan:
    del now
    frees = Frees(snapshot.nodes)
    ports = _Ports(frees)
    placements: list[GangPlacement] = []
    reasons: dict[str, str] = {}
    for job in snapshot.pending:
        replicas = first_fit(frees, job)
        if replicas is None:
            reasons[job.id] = f"first in queue; needs {job.replicas}× ({job.demand.describe()})"
            break
        placements.append(_gang(ports, job, replicas))
    return PlacementPlan(tuple(placements), reasons)


def _reservation(
    snapshot: Snapshot,
    frees: Frees,
    started: list[tuple[float, GangPlacement, PendingJob]],
    head: PendingJob,
    now: float,
) -> tuple[float, Frees]:
    """(shadow time, free room projected at that time after the head takes its share).

    Running jobs (and the ones started this round) end at their expected end; one with no
    estimate never ends. The head's share is taken first-fit from the projected room.
    """
    ends: list[tuple[float, int, tuple[ReplicaPlacement, ...], Demand]] = []
    for i, job in enumerate(snapshot.running):
        if job.expected_end is not None:
            ends.append((max(job.expected_end, now), i, job.replicas, job.demand))
    for i, (end, gang, pending) in enumerate(started):
        if end < math.inf:
            ends.append((end, len(snapshot.running) + i, gang.replicas, pending.demand))
    ends.sort(key=lambda e: (e[0], e[1]))
    projected = frees.copy()
    k = 0
    while k < len(ends):
        t = ends[k][0]
        while k < len(ends) and ends[k][0] == t:
            for replica in ends[k][2]:
                free = projected.by_id(replica.node_id)
                if free is not None:  # a node that went down is not in the snapshot
                    free.give(replica.gpus, ends[k][3])
            k += 1
        trial = projected.copy()
        if first_fit(trial, head) is not None:
            return t, trial
    return math.inf, projected


def fifo_backfill(snapshot: Snapshot, now: float) -> PlacementPlan:
    frees = Frees(snapshot.nodes)
    ports = _Ports(frees)
    placements: list[GangPlacement] = []
    started: list[tuple[float, GangPlacement, PendingJob]] = []
    reasons: dict[str, str] = {}
    head: PendingJob | None = None
    tested = 0
    shadow = math.inf
    reserved = frees  # room at the shadow time once the head has its share
    for job in snapshot.pending:
        if head is None:
            replicas = first_fit(frees, job)
            if replicas is not None:
                gang = _gang(ports, job, replicas)
                placements.append(gang)
                runtime = job.max_runtime_s if job.max_runtime_s is not None else math.inf
                started.append((now + runtime, gang, job))
                continue
            head = job
            shadow, reserved = _reservation(snapshot, frees, started, head, now)
            when = f"t={shadow:.0f}" if shadow < math.inf else "an unknown time"
            reasons[job.id] = f"first in queue, reserved to start at {when}"
            continue
        tested += 1
        if tested > BACKFILL_DEPTH:
            break
        replicas = first_fit(frees, job)  # on failure it leaves `frees` as it was
        if replicas is None:
            continue
        ends_by_shadow = job.max_runtime_s is not None and now + job.max_runtime_s <= shadow
        if not ends_by_shadow and shadow < math.inf:
            # It would still hold its room at the shadow time: only the room left over
            # after the head's reservation may be used.
            after = reserved.copy()
            if not all(_take_at(after, r.node_id, job) for r in replicas):
                for r in replicas:  # undo: it does not start
                    _give_at(frees, r, job)
                continue
            reserved = after
        placements.append(_gang(ports, job, replicas))
    return PlacementPlan(tuple(placements), reasons)


def _take_at(frees: Frees, node_id: str, job: PendingJob) -> bool:
    free = frees.by_id(node_id)
    return free is not None and free.take(job) is not None


def _give_at(frees: Frees, replica: ReplicaPlacement, job: PendingJob) -> None:
    free = frees.by_id(replica.node_id)
    assert free is not None
    free.give(replica.gpus, job.demand)


POLICIES: dict[PolicyName, Policy] = {
    "corral": corral,
    "fifo": fifo,
    "fifo-backfill": fifo_backfill,
}


def new_policy(name: PolicyName) -> Policy:
    """The policy `name` for one run: corral's keeps state between rounds (a Scheduler), so
    each run needs a fresh one; the baselines are stateless functions."""
    if name == "corral":
        return Scheduler().place
    return POLICIES[name]
