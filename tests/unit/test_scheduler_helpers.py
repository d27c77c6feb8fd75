"""Builders for the scheduler tests: fleets with topology, jobs, consistent snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from corral.core.placement import (
    Demand,
    GpuSlot,
    NodeState,
    PendingJob,
    PlacementPlan,
    ReplicaPlacement,
    RunningJob,
    Snapshot,
)

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
GB200 = "NVIDIA GB200"
MEMORY = {H100: 81_559, A100: 40_960, GB200: 189_471}


def node(
    name: str,
    gpus: int = 8,
    model: str = H100,
    *,
    rack: str = "r1",
    zone: str = "z1",
    region: str = "eu",
    provider: str = "dc",
    flat: bool = False,
    cpus: float = 64,
    memory_mb: int = 512_000,
    disk_mb: int = 1_000_000,
    unhealthy: Iterable[int] = (),
    labels: Mapping[str, str] | None = None,
) -> NodeState:
    bad = set(unhealthy)
    slots = tuple(GpuSlot(i, model, MEMORY.get(model, 81_920), i not in bad) for i in range(gpus))
    return NodeState(
        id=name,
        name=name,
        gpus=slots,
        cpus=cpus,
        memory_mb=memory_mb,
        disk_mb=disk_mb,
        topology=() if flat else (provider, region, zone, rack, name),
        labels=dict(labels or {}),
    )


def job(
    name: str,
    gpus: int = 0,
    replicas: int = 1,
    *,
    gpu_type: str | None = None,
    prio: int = 0,
    at: float = 0.0,
    ws: str = "default",
    preemptible: bool = False,
    topology: str | None = None,
    selector: Mapping[str, str] | None = None,
    max_runtime: float | None = None,
    cpus: float = 1,
    memory_mb: int = 1024,
    disk_mb: int = 0,
    min_memory: int | None = None,
) -> PendingJob:
    return PendingJob(
        id=name,
        replicas=replicas,
        demand=Demand(gpus, gpu_type, min_memory, cpus, memory_mb, disk_mb),
        priority=prio,
        submitted_at=at,
        workspace=ws,
        preemptible=preemptible,
        topology=topology,
        node_selector=dict(selector or {}),
        max_runtime_s=max_runtime,
    )


def running(
    name: str,
    on: Sequence[tuple[str, Sequence[int]]],
    *,
    prio: int = 0,
    ws: str = "default",
    preemptible: bool = True,
    started: float = 0.0,
    checkpoint: float | None = None,
    end: float | None = None,
    cpus: float = 1,
    memory_mb: int = 1024,
) -> RunningJob:
    """A running gang: one replica per (node, GPU indices)."""
    replicas = tuple(ReplicaPlacement(i, n, tuple(g)) for i, (n, g) in enumerate(on))
    per = len(on[0][1]) if on else 0
    return RunningJob(
        id=name,
        workspace=ws,
        priority=prio,
        preemptible=preemptible,
        demand=Demand(per, None, None, cpus, memory_mb, 0),
        replicas=replicas,
        started_at=started,
        last_checkpoint_at=checkpoint,
        expected_end=end,
    )


def world(
    nodes: Sequence[NodeState],
    pending: Sequence[PendingJob] = (),
    run: Sequence[RunningJob] = (),
    quotas: Mapping[str, Mapping[str, int]] | None = None,
) -> Snapshot:
    """A snapshot whose nodes' usage is exactly what the running jobs hold."""
    used: dict[str, list[RunningJob]] = {}
    for r in run:
        for rep in r.replicas:
            used.setdefault(rep.node_id, []).append(r)
    held = []
    for n in nodes:
        gpus: set[int] = set()
        cpus = 0.0
        memory = 0
        for r in run:
            for rep in r.replicas:
                if rep.node_id == n.id:
                    gpus |= set(rep.gpus)
                    cpus += r.demand.cpus
                    memory += r.demand.memory_mb
        held.append(replace(n, used_gpus=frozenset(gpus), used_cpus=cpus, used_memory_mb=memory))
    return Snapshot(tuple(held), tuple(pending), tuple(run), dict(quotas or {}))


def where(plan: PlacementPlan) -> dict[str, list[str]]:
    """job id -> the node of each replica, in rank order."""
    return {g.job_id: [r.node_id for r in g.replicas] for g in plan.placements}


def victims(plan: PlacementPlan) -> set[str]:
    return {p.job_id for p in plan.preemptions}


def test_world_charges_nodes_with_what_running_jobs_hold() -> None:
    snap = world([node("a"), node("b")], run=[running("r", [("a", [0, 1]), ("b", [3])])])
    a, b = snap.nodes
    assert a.used_gpus == {0, 1} and a.used_cpus == 1
    assert b.used_gpus == {3}
