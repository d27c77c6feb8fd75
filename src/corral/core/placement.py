"""Placement: the public seam between the server (or the simulator) and the scheduler.

`place(snapshot, now, config=None) -> PlacementPlan` is pure: no I/O, no clock reads, no
unseeded randomness. The types here are the contract; the decision itself is made by the
stages in `corral.core.scheduler` (see its README for the pipeline).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.core.scheduler.config import SchedulerConfig

FIRST_MASTER_PORT = 29500


@dataclass(frozen=True)
class GpuSlot:
    index: int
    model: str
    memory_mb: int
    healthy: bool = True


@dataclass(frozen=True)
class NodeState:
    """A schedulable node and what its current replicas already hold."""

    id: str
    name: str
    gpus: tuple[GpuSlot, ...]
    cpus: float
    memory_mb: int
    disk_mb: int
    used_gpus: frozenset[int] = frozenset()
    used_cpus: float = 0.0
    used_memory_mb: int = 0
    used_disk_mb: int = 0
    # TCP ports not to hand out there: what its agent reports listening (any process's),
    # and the rendezvous ports of corral's jobs placed there.
    used_ports: frozenset[int] = frozenset()
    # provider/region/zone/rack/node; a rack is one NVLink domain. Empty: unknown (flat).
    topology: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # A container runtime (docker, podman) answered there: jobs with an `image` may run.
    container_runtime: bool = False
    # ...and it passes NVIDIA GPUs through (the toolkit's runtime or CDI).
    container_gpus: bool = False


@dataclass(frozen=True)
class Demand:
    """What one replica of a job needs."""

    gpus: int = 0
    gpu_type: str | None = None
    gpu_min_memory_mb: int | None = None
    cpus: float = 1.0
    memory_mb: int = 0
    disk_mb: int = 0

    def describe(self) -> str:
        gpu = f"{self.gpu_type}:{self.gpus}" if self.gpu_type else str(self.gpus)
        return f"gpus={gpu} cpus={self.cpus:g} memory={self.memory_mb}Mi"


@dataclass(frozen=True)
class PendingJob:
    id: str
    replicas: int
    demand: Demand
    priority: int
    submitted_at: float
    workspace: str = "default"
    preemptible: bool = False
    # Widest domain the whole gang may span: node|rack|zone|region|provider|any.
    # None: the scheduler's default (SchedulerConfig.max_spread, one region).
    topology: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    max_runtime_s: float | None = None  # runtime estimate; needed for backfill guarantees
    # Node ids this job must avoid (they failed it recently: core.recovery excludes them).
    excluded_nodes: frozenset[str] = frozenset()
    # A container image to run in: only nodes with a container runtime qualify (and, when
    # it asks for GPUs, one that passes GPUs through).
    image: str | None = None


@dataclass(frozen=True)
class RunningJob:
    """A job holding resources now: a possible preemption victim, and quota usage."""

    id: str
    workspace: str
    priority: int
    preemptible: bool
    demand: Demand
    replicas: tuple[ReplicaPlacement, ...]
    started_at: float
    last_checkpoint_at: float | None = None
    expected_end: float | None = None  # started_at + max_runtime, when known


@dataclass(frozen=True)
class ReplicaPlacement:
    rank: int
    node_id: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeState, ...]
    pending: tuple[PendingJob, ...]
    running: tuple[RunningJob, ...] = ()
    # workspace -> GPU model -> guaranteed GPUs ("*" for any model)
    quotas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Every GPU model a node of this fleet has ever had, lost nodes' too: a job asking for
    # none of them is told so. Empty: not known (the reason then names the ready models).
    fleet_models: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GangPlacement:
    job_id: str
    replicas: tuple[ReplicaPlacement, ...]
    master_port: int
    # Placed beyond its workspace's guarantee and the unguaranteed pool, on GPUs guaranteed
    # to others: reclaimable by preemption.
    borrowed: bool = False


@dataclass(frozen=True)
class Preemption:
    job_id: str  # the victim: its whole gang is stopped
    for_job_id: str
    reason: str


@dataclass(frozen=True)
class Reservation:
    """EASY backfill: where and when the blocked head of the queue is expected to start."""

    job_id: str
    start_at: float
    node_ids: tuple[str, ...]


class Outcome(enum.Enum):
    """What the queue should do with a job next (the Kubernetes result codes, trimmed)."""

    PLACED = "placed"
    UNSCHEDULABLE = "unschedulable"  # may fit later, or after preemption: keep it queued
    UNRESOLVABLE = "unresolvable"  # never fits as asked on the nodes ready now


@dataclass(frozen=True)
class Decision:
    """One job's decision, as `corral.core.scheduler.Round.decisions()` yields it."""

    job_id: str
    outcome: Outcome
    reason: str | None = None
    placement: GangPlacement | None = None
    preemptions: tuple[Preemption, ...] = ()


@dataclass(frozen=True)
class PlacementPlan:
    placements: tuple[GangPlacement, ...]
    # Every pending job not placed, with the reason a user reads.
    pending_reasons: dict[str, str] = field(default_factory=dict)
    # Victims to stop. A placement may reuse a victim's GPUs: stop the victim first.
    preemptions: tuple[Preemption, ...] = ()
    # The subset of pending_reasons that never fits as asked (Outcome.UNRESOLVABLE).
    never_fits: dict[str, str] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()

    def outcome(self, job_id: str) -> Outcome:
        if job_id in self.never_fits:
            return Outcome.UNRESOLVABLE
        if job_id in self.pending_reasons:
            return Outcome.UNSCHEDULABLE
        return Outcome.PLACED


def place(snapshot: Snapshot, now: float, config: SchedulerConfig | None = None) -> PlacementPlan:
    """Place pending gangs: filter -> score -> gang place -> preempt -> reserve (backfill).

    Each gang is placed whole or not at all; see corral/core/scheduler/README.md.
    """
    # Imported here because the scheduler package imports this module's types.
    from corral.core.scheduler.pipeline import Round

    return Round(snapshot, now, config).run()
