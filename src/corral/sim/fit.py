"""Free resources of nodes and first-fit gang placement, for the baseline policies.

Deliberately simple and separate from the real scheduler: the baselines are what corral is
measured against, so they must not share (or inherit fixes from) its code.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.placement import Demand, NodeState, PendingJob, ReplicaPlacement


@dataclass
class Free:
    """What is free on one node: GPU index -> (model, memory), CPUs, memory, disk."""

    node: NodeState
    gpus: dict[int, tuple[str, int]]
    cpus: float
    memory_mb: int
    disk_mb: int

    @classmethod
    def of(cls, node: NodeState) -> Free:
        return cls(
            node,
            {
                g.index: (g.model, g.memory_mb)
                for g in node.gpus
                if g.healthy and g.index not in node.used_gpus
            },
            node.cpus - node.used_cpus,
            node.memory_mb - node.used_memory_mb,
            node.disk_mb - node.used_disk_mb,
        )

    def copy(self) -> Free:
        return Free(self.node, dict(self.gpus), self.cpus, self.memory_mb, self.disk_mb)

    def matching(self, demand: Demand) -> list[int]:
        want = demand.gpu_type.upper() if demand.gpu_type else None
        floor = demand.gpu_min_memory_mb
        return [
            i
            for i, (model, memory) in self.gpus.items()
            if (want is None or want in model.upper()) and (floor is None or memory >= floor)
        ]

    def take(self, job: PendingJob) -> tuple[int, ...] | None:
        """Take one replica of `job` (lowest GPU indices first); None if it does not fit."""
        d = job.demand
        if self.cpus + 1e-9 < d.cpus or self.memory_mb < d.memory_mb or self.disk_mb < d.disk_mb:
            return None
        if any(self.node.labels.get(k) != v for k, v in job.node_selector.items()):
            return None
        if job.image is not None and not (
            self.node.container_runtime and (d.gpus == 0 or self.node.container_gpus)
        ):
            return None
        if d.gpus > len(self.gpus):
            return None
        matching = self.matching(d)
        if len(matching) < d.gpus:
            return None
        chosen = tuple(sorted(matching)[: d.gpus])
        for i in chosen:
            del self.gpus[i]
        self.cpus -= d.cpus
        self.memory_mb -= d.memory_mb
        self.disk_mb -= d.disk_mb
        return chosen

    def give(self, gpus: tuple[int, ...], demand: Demand) -> None:
        """Return one replica's resources (a running job ending, in a projection)."""
        by_index = {g.index: (g.model, g.memory_mb) for g in self.node.gpus}
        for i in gpus:
            self.gpus[i] = by_index[i]
        self.cpus += demand.cpus
        self.memory_mb += demand.memory_mb
        self.disk_mb += demand.disk_mb


class Frees:
    """The free room of every node, in snapshot order, each built the first time it is used.

    Most nodes of a busy cluster are full: a cheap upper bound on a node's free GPUs and
    CPUs skips them without building anything.
    """

    def __init__(self, nodes: tuple[NodeState, ...]) -> None:
        self.nodes = nodes
        self.built: dict[int, Free] = {}
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, k: int) -> Free:
        free = self.built.get(k)
        if free is None:
            free = self.built[k] = Free.of(self.nodes[k])
        return free

    def by_id(self, node_id: str) -> Free | None:
        if self._index is None:
            self._index = {n.id: k for k, n in enumerate(self.nodes)}
        k = self._index.get(node_id)
        return None if k is None else self.get(k)

    def cannot_host(self, k: int, demand: Demand) -> bool:
        if k in self.built:
            return False
        n = self.nodes[k]
        return (
            len(n.gpus) - len(n.used_gpus) < demand.gpus
            or n.cpus - n.used_cpus + 1e-9 < demand.cpus
        )

    def copy(self) -> Frees:
        other = Frees(self.nodes)
        other.built = {k: f.copy() for k, f in self.built.items()}
        other._index = self._index
        return other


def first_fit(frees: Frees, job: PendingJob) -> tuple[ReplicaPlacement, ...] | None:
    """Each replica on the first node (in snapshot order) with room; all or nothing.

    On success `frees` is changed in place; on failure it is left as it was.
    """
    taken: list[tuple[Free, ReplicaPlacement]] = []
    start = 0
    for rank in range(job.replicas):
        for k in range(start, len(frees)):
            if frees.cannot_host(k, job.demand):
                continue
            free = frees.get(k)
            gpus = free.take(job)
            if gpus is not None:
                taken.append((free, ReplicaPlacement(rank, free.node.id, gpus)))
                start = k  # the next replica may share this node, never an earlier one
                break
        else:
            for free, replica in taken:
                free.give(replica.gpus, job.demand)
            return None
    return tuple(r for _, r in taken)
