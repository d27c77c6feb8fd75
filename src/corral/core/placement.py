"""First placement: gangs all-or-nothing on nodes with enough free resources.

The scheduler issue replaces the insides (filter -> score -> gang place -> preempt); the
signature `place(snapshot, now) -> PlacementPlan` stays. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    used_ports: frozenset[int] = frozenset()
    # provider/region/zone/rack/node; a rack is one NVLink domain. Empty: unknown (flat).
    topology: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


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
    topology: str | None = None  # required domain for the whole gang: node|rack|zone|region
    node_selector: Mapping[str, str] = field(default_factory=dict)
    max_runtime_s: float | None = None  # runtime estimate; needed for backfill guarantees


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


@dataclass(frozen=True)
class GangPlacement:
    job_id: str
    replicas: tuple[ReplicaPlacement, ...]
    master_port: int


@dataclass(frozen=True)
class Preemption:
    job_id: str  # the victim: its whole gang is stopped
    for_job_id: str
    reason: str


@dataclass(frozen=True)
class PlacementPlan:
    placements: tuple[GangPlacement, ...]
    pending_reasons: dict[str, str] = field(default_factory=dict)
    preemptions: tuple[Preemption, ...] = ()


@dataclass
class _Free:
    gpus: list[GpuSlot]
    cpus: float
    memory_mb: int
    disk_mb: int
    ports: set[int]


def _free(node: NodeState) -> _Free:
    return _Free(
        gpus=[g for g in node.gpus if g.healthy and g.index not in node.used_gpus],
        cpus=node.cpus - node.used_cpus,
        memory_mb=node.memory_mb - node.used_memory_mb,
        disk_mb=node.disk_mb - node.used_disk_mb,
        ports=set(node.used_ports),
    )


def _gpu_matches(slot: GpuSlot, demand: Demand) -> bool:
    if demand.gpu_type and demand.gpu_type.upper() not in slot.model.upper():
        return False
    return demand.gpu_min_memory_mb is None or slot.memory_mb >= demand.gpu_min_memory_mb


def _take(free: _Free, demand: Demand) -> tuple[int, ...] | None:
    """GPUs taken from `free` for one replica, or None when it does not fit (free unchanged)."""
    if free.cpus + 1e-9 < demand.cpus or free.memory_mb < demand.memory_mb:
        return None
    if free.disk_mb < demand.disk_mb:
        return None
    matching = [g for g in free.gpus if _gpu_matches(g, demand)]
    if len(matching) < demand.gpus:
        return None
    chosen = sorted(matching, key=lambda g: g.index)[: demand.gpus]
    taken = {g.index for g in chosen}
    free.gpus = [g for g in free.gpus if g.index not in taken]
    free.cpus -= demand.cpus
    free.memory_mb -= demand.memory_mb
    free.disk_mb -= demand.disk_mb
    return tuple(sorted(taken))


def _fits(free: _Free, demand: Demand) -> bool:
    return (
        free.cpus + 1e-9 >= demand.cpus
        and free.memory_mb >= demand.memory_mb
        and free.disk_mb >= demand.disk_mb
        and sum(1 for g in free.gpus if _gpu_matches(g, demand)) >= demand.gpus
    )


def _leftover(free: _Free) -> tuple[int, float]:
    return (len(free.gpus), free.cpus)


def _why(job: PendingJob, frees: dict[str, _Free], names: dict[str, str]) -> str:
    if not frees:
        return "waiting for a ready node: none is connected"
    need = f"needs {job.replicas}× ({job.demand.describe()})"
    best = max(frees.items(), key=lambda kv: (_matching_gpus(kv[1], job.demand), kv[1].cpus))
    node, free = best
    have = (
        f"most free: node {names[node]} with {_matching_gpus(free, job.demand)} matching GPUs, "
        f"{free.cpus:g} CPUs, {free.memory_mb}Mi memory"
    )
    return f"{need}; {have}"


def _matching_gpus(free: _Free, demand: Demand) -> int:
    return sum(1 for g in free.gpus if _gpu_matches(g, demand))


def place(snapshot: Snapshot, now: float) -> PlacementPlan:
    """Place pending gangs, highest priority first, then oldest; each all or nothing.

    Within a gang each replica goes to the node it fits tightest (best fit), keeping large
    holes for large jobs. `now` is part of the signature for the scheduler that replaces this.
    """
    del now
    frees = {n.id: _free(n) for n in snapshot.nodes}
    names = {n.id: n.name for n in snapshot.nodes}
    order = sorted(snapshot.pending, key=lambda j: (-j.priority, j.submitted_at, j.id))
    placements: list[GangPlacement] = []
    reasons: dict[str, str] = {}
    for job in order:
        trial = {node_id: _copy(free) for node_id, free in frees.items()}
        chosen: list[ReplicaPlacement] = []
        for rank in range(job.replicas):
            candidates = [nid for nid, free in trial.items() if _fits(free, job.demand)]
            if not candidates:
                break
            # Best fit: the node left with the fewest free GPUs, then CPUs; name breaks ties.
            node_id = min(
                candidates,
                key=lambda nid: (
                    _leftover(trial[nid])[0] - job.demand.gpus,
                    trial[nid].cpus,
                    names[nid],
                ),
            )
            gpus = _take(trial[node_id], job.demand)
            assert gpus is not None
            chosen.append(ReplicaPlacement(rank, node_id, gpus))
        if len(chosen) < job.replicas:
            reasons[job.id] = _why(job, frees, names)
            continue
        master = trial[chosen[0].node_id]
        port = FIRST_MASTER_PORT
        while port in master.ports:
            port += 1
        master.ports.add(port)
        frees = trial
        placements.append(GangPlacement(job.id, tuple(chosen), port))
    return PlacementPlan(tuple(placements), reasons)


def _copy(free: _Free) -> _Free:
    return _Free(list(free.gpus), free.cpus, free.memory_mb, free.disk_mb, set(free.ports))
