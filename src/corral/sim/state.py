"""A node's and a job's mutable state, with the immutable views the scheduler is shown.

Each view (a node's NodeState, a job's PendingJob and RunningJob) is cached and rebuilt
only when its node or job changes, because a snapshot is built every round and most of the
world does not change between two rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from corral.core.placement import (
    Demand,
    GangPlacement,
    GpuSlot,
    NodeState,
    PendingJob,
    RunningJob,
)
from corral.sim.cluster import Cluster, SimNode
from corral.sim.workload import Job


class PlanError(RuntimeError):
    """The scheduler returned a plan that cannot be applied: a bug in the scheduler."""


@dataclass(eq=False)
class NodeRun:
    spec: SimNode
    slots: tuple[GpuSlot, ...]
    up: bool = True
    used_gpus: set[int] = field(default_factory=set)
    used_cpus: float = 0.0
    used_memory_mb: int = 0
    used_disk_mb: int = 0
    ports: set[int] = field(default_factory=set)
    jobs: set[int] = field(default_factory=set)  # indices of jobs with a replica here
    idle_since: float = 0.0  # when its last replica ended (or it joined); for pools
    view: NodeState | None = None  # cached; None when stale

    def state(self) -> NodeState:
        if self.view is None:
            s = self.spec
            self.view = NodeState(
                id=s.id,
                name=s.name,
                gpus=self.slots,
                cpus=s.cpus,
                memory_mb=s.memory_mb,
                disk_mb=s.disk_mb,
                used_gpus=frozenset(self.used_gpus),
                used_cpus=self.used_cpus,
                used_memory_mb=self.used_memory_mb,
                used_disk_mb=self.used_disk_mb,
                used_ports=frozenset(self.ports),
                topology=s.topology,
                labels=s.labels,
            )
        return self.view

    def free_models(self) -> list[str]:
        if not self.up:
            return []
        return [g.model for g in self.slots if g.index not in self.used_gpus]


@dataclass(eq=False)
class JobRun:
    """A job's progress. Work is kept in seconds of uninterrupted running."""

    job: Job
    index: int
    demand: Demand
    remaining_s: float
    state: str = "future"  # future | pending | running | done | dropped
    attempt: int = 0
    started_at: float = 0.0
    first_start: float | None = None
    finished_at: float | None = None
    last_checkpoint_at: float | None = None
    gang: GangPlacement | None = None
    price_per_gpu_s: float = 0.0
    pending_view: PendingJob | None = None
    running_view: RunningJob | None = None
    running_view_until: float = math.inf  # the view's last_checkpoint_at is right until then

    def pending(self) -> PendingJob:
        if self.pending_view is None:
            j = self.job
            done = j.duration_s - self.remaining_s
            self.pending_view = PendingJob(
                id=j.id,
                replicas=j.replicas,
                demand=self.demand,
                priority=j.priority,
                submitted_at=j.submit_s,
                workspace=j.workspace,
                preemptible=j.preemptible,
                max_runtime_s=None if j.estimate_s is None else max(0.0, j.estimate_s - done),
            )
        return self.pending_view

    def checkpoint_at(self, now: float, interval: float | None) -> float | None:
        """Time of the newest checkpoint at `now` (an earlier attempt's if none yet)."""
        if interval and now - self.started_at >= interval:
            return self.started_at + (now - self.started_at) // interval * interval
        return self.last_checkpoint_at

    def running(self, now: float, interval: float | None) -> RunningJob:
        if self.running_view is None or now >= self.running_view_until:
            assert self.gang is not None
            estimate = self.pending().max_runtime_s
            self.running_view = RunningJob(
                id=self.job.id,
                workspace=self.job.workspace,
                priority=self.job.priority,
                preemptible=self.job.preemptible,
                demand=self.demand,
                replicas=self.gang.replicas,
                started_at=self.started_at,
                last_checkpoint_at=self.checkpoint_at(now, interval),
                expected_end=None if estimate is None else self.started_at + estimate,
            )
            if interval:
                done = (now - self.started_at) // interval + 1
                self.running_view_until = self.started_at + done * interval
        return self.running_view


def node_runs(cluster: Cluster) -> list[NodeRun]:
    return [
        NodeRun(n, tuple(GpuSlot(i, n.gpu_model, n.gpu_memory_mb) for i in range(n.gpus)))
        for n in cluster.nodes
    ]


def job_runs(jobs: list[Job]) -> list[JobRun]:
    return [
        JobRun(
            j,
            i,
            Demand(gpus=j.gpus, gpu_type=j.gpu_type, cpus=j.cpus, memory_mb=j.memory_mb),
            j.duration_s,
        )
        for i, j in enumerate(jobs)
    ]


def check_gang(
    gang: GangPlacement, run: JobRun, nodes: list[NodeRun], index: dict[str, int]
) -> None:
    """Raise PlanError unless `gang` fits the job and the nodes' free room right now."""
    d = run.demand
    if len(gang.replicas) != run.job.replicas:
        raise PlanError(f"{gang.job_id}: {len(gang.replicas)} replicas, job has {run.job.replicas}")
    taken: dict[str, list[float]] = {}
    for r in gang.replicas:
        i = index.get(r.node_id)
        node = None if i is None else nodes[i]
        if node is None or not node.up:
            raise PlanError(f"{gang.job_id}: node {r.node_id} is not up")
        if len(r.gpus) != d.gpus or len(set(r.gpus)) != d.gpus:
            raise PlanError(f"{gang.job_id}: replica {r.rank} got GPUs {r.gpus}, needs {d.gpus}")
        use = taken.setdefault(r.node_id, [0.0, 0.0, 0.0])
        for g in r.gpus:
            if g in node.used_gpus or not 0 <= g < len(node.slots):
                raise PlanError(f"{gang.job_id}: GPU {g} of {r.node_id} is not free")
        use[0] += d.cpus
        use[1] += d.memory_mb
        use[2] += d.disk_mb
        s = node.spec
        if (
            node.used_cpus + use[0] > s.cpus + 1e-6
            or node.used_memory_mb + use[1] > s.memory_mb
            or node.used_disk_mb + use[2] > s.disk_mb
        ):
            raise PlanError(f"{gang.job_id}: node {r.node_id} over-committed (CPU/memory/disk)")
    all_gpus = [(r.node_id, g) for r in gang.replicas for g in r.gpus]
    if len(set(all_gpus)) != len(all_gpus):
        raise PlanError(f"{gang.job_id}: one GPU given to two replicas")
