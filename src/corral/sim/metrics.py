"""What a run measures as it goes: step series over time and fragmentation.

Fragmentation follows the FGD paper (Weng et al., ATC'23), adapted to whole GPUs: the
target workload is the mix of replica shapes (GPUs, GPU model, CPUs, memory) among the
run's GPU jobs. From one shape's point of view, a node's idle GPUs are fragmented when that
shape cannot be placed there (too few idle GPUs of the model, or too little CPU or memory
left beside them). A node's fragmented GPUs are its idle GPUs times the share of the mix
that cannot use them; the cluster's is the sum over nodes, in GPUs. As in FGD, a node too
small for a shape even when empty counts for that shape: those GPUs are stranded for it
whatever the scheduler does. The report gives the time average in GPUs and the share of
the idle GPU-hours (report.py), which compares across fleets of any size.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from corral.sim.workload import Job

MAX_SHAPES = 32  # the mix keeps its most common shapes; the rest weigh little (see report)


@dataclass(frozen=True)
class Shape:
    gpus: int
    gpu_type: str | None
    cpus: float
    memory_mb: int


def workload_mix(jobs: Iterable[Job]) -> list[tuple[Shape, float]]:
    """The most common replica shapes among GPU jobs, with their share of those jobs."""
    counts = Counter(
        Shape(j.gpus, j.gpu_type.upper() if j.gpu_type else None, j.cpus, j.memory_mb)
        for j in jobs
        if j.gpus > 0
    )
    # Ties broken by the shape itself, so the mix does not depend on the order of the jobs.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))[:MAX_SHAPES]
    total = sum(n for _, n in ranked)
    return [(shape, n / total) for shape, n in ranked]


class Fragmentation:
    """Per-node fragmented GPUs, recomputed only for nodes that changed."""

    def __init__(self, mix: list[tuple[Shape, float]], nodes: int) -> None:
        self._mix = mix
        self._per_node = [0.0] * nodes
        self.total = 0.0

    def update(self, node: int, free_models: list[str], cpus: float, memory_mb: int) -> None:
        """Node `node` now has GPUs of `free_models` free (empty when down) and this room."""
        free = len(free_models)
        value = 0.0
        if free:
            for shape, weight in self._mix:
                if shape.gpus > free or cpus + 1e-9 < shape.cpus or memory_mb < shape.memory_mb:
                    value += weight
                elif shape.gpu_type is not None:
                    have = sum(1 for m in free_models if shape.gpu_type in m.upper())
                    if have < shape.gpus:
                        value += weight
            value *= free
        self.total += value - self._per_node[node]
        self._per_node[node] = value


class Series:
    """Columns sampled at each instant something changed (a step function in time)."""

    def __init__(self) -> None:
        self.t = array("d")
        self.used = array("d")  # GPUs allocated
        self.up = array("d")  # GPUs on nodes that are up
        self.queued = array("d")  # GPUs asked for by pending jobs
        self.arrived = array("d")  # GPUs asked for by all jobs arrived so far
        self.fragmented = array("d")  # fragmented GPUs (see Fragmentation)

    def __len__(self) -> int:
        return len(self.t)

    def add(
        self, t: float, used: int, up: int, queued: int, arrived: int, fragmented: float
    ) -> None:
        if self.t and self.t[-1] == t:
            for col in (self.t, self.used, self.up, self.queued, self.arrived, self.fragmented):
                col.pop()
        self.t.append(t)
        self.used.append(used)
        self.up.append(up)
        self.queued.append(queued)
        self.arrived.append(arrived)
        self.fragmented.append(fragmented)

    def time_average(self, column: array[float], start: float, end: float) -> float:
        """Mean of a step column over [start, end] (each value holds until the next sample)."""
        if end <= start or not self.t:
            return 0.0
        area = 0.0
        for k in range(len(self.t)):
            lo = max(self.t[k], start)
            hi = min(self.t[k + 1] if k + 1 < len(self.t) else end, end)
            if hi > lo:
                area += column[k] * (hi - lo)
        return area / (end - start)

    def idle(self) -> array[float]:
        """GPUs up and not allocated, per sample."""
        return array("d", (up - used for up, used in zip(self.up, self.used, strict=True)))
