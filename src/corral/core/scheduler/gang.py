"""Gangs: a job's replicas are committed in one step, all of them, or nothing is taken.

`commit` turns a complete `Fit` into GPU indices and a master port; the search already
checked every node exactly, so no take can fail half way and nothing is ever left
reserved for a gang that did not place (no partial reservations to deadlock two gangs).

A `Holding` is what one job holds now — a running job from the snapshot or a gang placed
this round. Preemption and backfill release holdings hypothetically and restore them
exactly, through the same incremental updates, instead of copying the cluster.

Holdings and parts are named tuples of plain values: CPython stops tracking such tuples
in its cyclic GC, and a Scheduler keeps ~10,000 of them alive between rounds.
"""

from __future__ import annotations

from typing import NamedTuple

from corral.core.placement import GangPlacement, PendingJob, ReplicaPlacement, RunningJob
from corral.core.scheduler.filters import CPU_ONLY, Shape
from corral.core.scheduler.index import FleetIndex, milli
from corral.core.scheduler.state import ClusterState
from corral.core.scheduler.topology import Fit


class Part(NamedTuple):
    """One replica's hold on one node."""

    node: int
    gpus: tuple[int, ...]
    cpus: float
    memory_mb: int
    disk_mb: int


class Holding(NamedTuple):
    """Immutable, so a Scheduler may keep it between rounds while its RunningJob is the same;
    a round keeps its own marks (evicted, borrowed) beside it."""

    job_id: str
    workspace: str
    priority: int
    preemptible: bool
    # GPUs held per class (None: a GPU not healthy now). A gang placed here uses one class;
    # a running job from elsewhere may hold two, and each counts against its own quota.
    by_class: tuple[tuple[int | None, int], ...]
    gpu_classes: tuple[int, ...]  # the classes in by_class, for quick set tests
    gpus: int
    cpus: float
    memory_mb: int
    parts: tuple[Part, ...]
    started_at: float
    last_checkpoint_at: float | None = None
    expected_end: float | None = None
    borrowed: bool = False  # placed this round beyond its workspace's guarantee
    placed_now: bool = False  # placed by this round: never a victim in the same round

    def gpus_of(self, c: int | None) -> int:
        return sum(n for k, n in self.by_class if k == c)

    @property
    def since(self) -> float:
        """Its newest checkpoint, else its start: the work after it is lost if stopped."""
        return self.last_checkpoint_at if self.last_checkpoint_at is not None else self.started_at

    def work_lost(self, now: float) -> float:
        return max(0.0, now - self.since)


Freed = list[tuple[int, ...]]  # per part, the GPUs a release actually freed
UsageKey = tuple[str, int | None, bool]  # (workspace, GPU class, preemptible)
Usage = dict[UsageKey, list[int]]  # -> [GPUs, milli-CPUs, memory] of the running jobs


def add_usage(usage: Usage, h: Holding, sign: int = 1) -> None:
    """Add (or take away) a holding: GPUs under each class's key; CPUs and memory once."""
    for i, (c, gpus) in enumerate(h.by_class or ((None, 0),)):
        key = (h.workspace, c, h.preemptible)
        u = usage.get(key)
        if u is None:
            u = usage[key] = [0, 0, 0]
        u[0] += sign * gpus
        if i == 0:
            u[1] += sign * milli(h.cpus)
            u[2] += sign * h.memory_mb
        if not any(u):
            del usage[key]


def holding_of(job: RunningJob, st: ClusterState | FleetIndex) -> Holding:
    d = job.demand
    parts = []
    by_class: dict[int | None, int] = {}
    for r in job.replicas:
        node = st.index.get(r.node_id)
        if node is None:
            continue  # on a node not ready now: nothing to release here
        slot_class = st.slot_class[node]
        for g in r.gpus:
            c = slot_class.get(g)
            by_class[c] = by_class.get(c, 0) + 1
        parts.append(Part(node, r.gpus, d.cpus, d.memory_mb, d.disk_mb))
    n = len(job.replicas)
    return Holding(
        job_id=job.id,
        workspace=job.workspace,
        priority=job.priority,
        preemptible=job.preemptible,
        by_class=tuple(sorted(by_class.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))),
        gpu_classes=tuple(sorted(c for c in by_class if c is not None)),
        gpus=sum(len(r.gpus) for r in job.replicas),
        cpus=d.cpus * n,
        memory_mb=d.memory_mb * n,
        parts=tuple(parts),
        started_at=job.started_at,
        last_checkpoint_at=job.last_checkpoint_at,
        expected_end=job.expected_end,
    )


def commit(
    st: ClusterState,
    job: PendingJob,
    shape: Shape,
    fit: Fit,
    now: float,
    first_port: int,
    borrowed: bool,
) -> tuple[GangPlacement, Holding]:
    c = fit.gpu_class
    replicas: list[ReplicaPlacement] = []
    parts: list[Part] = []
    for node, count in fit.nodes:
        for _ in range(count):
            gpus = st.take(node, c, shape.gpus) if c != CPU_ONLY and shape.gpus else ()
            assert len(gpus) == shape.gpus, "the search checked this node exactly"
            st.use(node, shape.cpus, shape.memory_mb, shape.disk_mb)
            replicas.append(ReplicaPlacement(len(replicas), st.nodes[node].id, gpus))
            parts.append(Part(node, gpus, shape.cpus, shape.memory_mb, shape.disk_mb))
    master = fit.nodes[0][0]
    port = first_port
    while port in st.ports_of(master):
        port += 1
    st.add_port(master, port)
    n = len(replicas)
    holding = Holding(
        job_id=job.id,
        workspace=job.workspace,
        priority=job.priority,
        preemptible=job.preemptible,
        by_class=((c, shape.gpus * n),) if c != CPU_ONLY and shape.gpus else (),
        gpu_classes=(c,) if c != CPU_ONLY and shape.gpus else (),
        gpus=shape.gpus * n,
        cpus=shape.cpus * n,
        memory_mb=shape.memory_mb * n,
        parts=tuple(parts),
        started_at=now,
        expected_end=None if job.max_runtime_s is None else now + job.max_runtime_s,
        borrowed=borrowed,
        placed_now=True,
    )
    return GangPlacement(job.id, tuple(replicas), port, borrowed), holding


def release(st: ClusterState, h: Holding) -> Freed:
    """Free what the holding holds (to evict it, or to see what its end would allow)."""
    freed: Freed = []
    for p in h.parts:
        freed.append(st.release(p.node, p.gpus))
        st.use(p.node, p.cpus, p.memory_mb, p.disk_mb, sign=-1)
    return freed


def restore(st: ClusterState, h: Holding, freed: Freed) -> None:
    """Undo `release` exactly: the same GPUs, CPUs, memory and disk are held again."""
    for p, gpus in zip(h.parts, freed, strict=True):
        st.take_exact(p.node, gpus)
        st.use(p.node, p.cpus, p.memory_mb, p.disk_mb)
