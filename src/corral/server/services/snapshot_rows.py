"""What the scheduler's snapshot makes of one stored row: a node's static part, a
replica's holding, a live job's scanned columns, a pending job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select

from corral.core.placement import Demand, GpuSlot, NodeState, PendingJob
from corral.core.recovery import RecoveryMemory
from corral.server.store.tables import Job, Node
from corral.spec.job import JobSpec

# Node labels that place a node in the topology tree provider/region/zone/rack/node.
TOPOLOGY_LABELS = ("provider", "region", "zone", "rack")


def node_topology(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The node's topology path from its labels; () when it reports none (a flat fleet)."""
    path = tuple(labels.get(key, "") for key in TOPOLOGY_LABELS)
    return path if any(path) else ()


def demand_of(spec: JobSpec) -> Demand:
    res = spec.resources
    return Demand(
        gpus=res.gpus.count,
        gpu_type=res.gpus.type,
        gpu_min_memory_mb=res.gpus.min_memory,
        cpus=res.cpus,
        memory_mb=res.memory,
        disk_mb=res.disk,
    )


@dataclass(frozen=True, slots=True)
class ReplicaFacts:
    """What a replica holds; none of it changes after the replica is created."""

    node_id: str
    job_id: str
    attempt: int
    rank: int
    gpus: tuple[int, ...]
    cpus: float
    memory_mb: int
    disk_mb: int
    created_at: float


class LiveJob(NamedTuple):
    """The narrow columns of a live job read every round (a row of `LIVE_COLUMNS`)."""

    id: str
    version: int
    state: str
    attempt: int
    master_port: int | None
    workspace_id: str
    priority: int
    started_at: float | None
    reason: str | None


LIVE_COLUMNS = (
    Job.id,
    Job.version,
    Job.state,
    Job.attempt,
    Job.master_port,
    Job.workspace_id,
    Job.priority,
    Job.started_at,
    Job.reason,
)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    spec: JobSpec
    job: PendingJob  # excluded_nodes as of the round that built it
    excluded: Mapping[str, float]  # node name -> until when (from the job's recovery)


# What a pending job needs besides its spec (which comes from the parsed-spec cache).
PENDING_COLUMNS = select(
    Job.id, Job.next_replicas, Job.priority, Job.submitted_at, Job.workspace_id, Job.recovery
)


def pending_entry(
    job: Any,
    spec: JobSpec,
    workspaces: Mapping[str, str],
    names: Mapping[str, str],
    now: float,
) -> PendingEntry:
    excluded = RecoveryMemory.from_json(job.recovery).excluded
    return PendingEntry(
        spec,
        PendingJob(
            id=job.id,
            replicas=job.next_replicas or spec.replicas,
            demand=demand_of(spec),
            priority=job.priority,
            submitted_at=job.submitted_at,
            workspace=workspaces[job.workspace_id],
            preemptible=spec.preemptible,
            topology=spec.topology,
            node_selector=dict(spec.node_selector),
            max_runtime_s=spec.max_runtime,
            excluded_nodes=excluded_now(excluded, names, now),
            image=spec.image,
        ),
        dict(excluded),
    )


def node_base(node: Node) -> NodeState:
    runtimes = node_runtimes(node)
    return NodeState(
        id=node.id,
        name=node.name,
        gpus=tuple(
            GpuSlot(g["index"], g["model"], g["memory_mb"], g.get("healthy", True))
            for g in node.gpus
        ),
        cpus=node.cpus,
        memory_mb=node.memory_mb,
        disk_mb=node.disk_mb,
        # What the node's agent reports listening there (corral's own ports are added per
        # round, from the live jobs: SnapshotLoader._restate).
        used_ports=frozenset(node.ports or ()),
        topology=node_topology(node.labels),
        labels=dict(node.labels),
        container_runtime=bool(runtimes),
        container_gpus=any(r.get("gpus") is True for r in runtimes),
    )


def node_runtimes(node: Node) -> list[dict[str, Any]]:
    """The container runtimes the node's agent reported (wire ContainerRuntime dicts).

    Read defensively: stored JSON from an older agent, or none at all, is "no runtime".
    """
    stored = node.runtimes
    if not isinstance(stored, list):
        return []
    return [r for r in stored if isinstance(r, dict)]


def excluded_now(
    excluded: Mapping[str, float], names: Mapping[str, str], now: float
) -> frozenset[str]:
    return frozenset(names[n] for n, until in excluded.items() if until > now and n in names)
