"""What a pool's nodes can hold: the fitting arithmetic of the fleet autoscaler. Pure.

`core/pools.py` decides; this module answers its questions about one pool at a time:
does a gang's demand match the pool's shape and labels at all, how many replicas fit on
one node, and how many new nodes a gang needs there once the pool's free capacity (ready
nodes with room, nodes still booting) is used first.

One rule keeps this simple and safe: a gang's replicas all go to one pool (one GPU class
in one place, which is what the scheduler's default spread, a region, asks anyway), and a
gang whose topology is `node` (or `rack` where the pool's nodes share no rack) to one node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from corral.core.placement import Demand
from corral.core.scheduler.gpu_models import matches
from corral.providers.base import Shape

_EPS = 1e-9
# Topologies that keep the whole gang on one node: a rack is one NVLink domain, and a
# pool's nodes are in one rack only when the pool says so with a `rack` label.
ONE_NODE = "node"
RACK = "rack"


@dataclass
class Room:
    """Free capacity on one node of a pool (a ready one's free share, or a booting one's
    whole shape). Mutable: placing a gang this round takes from it."""

    pool: str
    instance: str
    gpus: int
    cpus: float
    memory_mb: int
    booting: bool

    def holds(self, d: Demand, limit: int) -> int:
        """Replicas of `d` this node can take now, at most `limit`."""
        return min(limit, _per_node(self.gpus, self.cpus, self.memory_mb, d))

    def take(self, d: Demand, n: int) -> None:
        self.gpus -= n * d.gpus
        self.cpus -= n * d.cpus
        self.memory_mb -= n * d.memory_mb


def _per_node(gpus: int, cpus: float, memory_mb: int, d: Demand) -> int:
    n = math.inf
    if d.gpus > 0:
        n = min(n, gpus // d.gpus)
    if d.cpus > 0:
        n = min(n, int((cpus + _EPS) // d.cpus))
    if d.memory_mb > 0:
        n = min(n, memory_mb // d.memory_mb)
    # A replica that asks for nothing: any node holds as many as are asked for.
    return int(n) if n != math.inf else 1 << 30


def per_node(shape: Shape, d: Demand) -> int:
    """Replicas of `d` one new node of this shape holds (0: not even one)."""
    return _per_node(shape.gpus, shape.cpus, shape.memory_mb, d)


def describe_shape(shape: Shape) -> str:
    if shape.gpus:
        mem = f" {shape.gpu_memory_mb // 1024}GB" if shape.gpu_memory_mb else ""
        return f"{shape.gpus} x {shape.gpu_model}{mem}, {shape.cpus:g} CPUs"
    return f"no GPUs, {shape.cpus:g} CPUs, {shape.memory_mb // 1024}GB"


def mismatch(
    shape: Shape, labels: Mapping[str, str], d: Demand, selector: Mapping[str, str]
) -> str | None:
    """Why no node of this pool can ever hold one replica; None when one can."""
    if d.gpus > 0:
        if shape.gpus == 0 or shape.gpu_model is None:
            return "has no GPUs"
        if d.gpu_type and not matches(d.gpu_type, shape.gpu_model):
            return f"has {shape.gpu_model}, not {d.gpu_type}"
        if d.gpu_min_memory_mb and shape.gpu_memory_mb < d.gpu_min_memory_mb:
            have = f"{shape.gpu_memory_mb}Mi" if shape.gpu_memory_mb else "an unknown amount"
            return f"its GPUs have {have} of memory, not {d.gpu_min_memory_mb}Mi"
    for key, want in sorted(selector.items()):
        if labels.get(key) != want:
            return f"its nodes do not have the label {key}={want}"
    if per_node(shape, d) == 0:
        return f"one node ({describe_shape(shape)}) cannot hold one replica"
    return None


def one_node(topology: str | None, labels: Mapping[str, str]) -> bool:
    """Whether the gang must be on one node of this pool."""
    return topology == ONE_NODE or (topology == RACK and not labels.get("rack"))


@dataclass(frozen=True)
class Fit:
    """How a gang fits in one pool: which existing rooms it takes, and how many new nodes."""

    taken: tuple[tuple[int, int], ...]  # (index into the pool's rooms, replicas)
    new_nodes: int


def fit_in_pool(
    rooms: list[Room], shape: Shape, d: Demand, replicas: int, whole_node: bool
) -> Fit | None:
    """The fewest new nodes that, with the pool's free rooms first, hold the gang; None
    when one node must hold it all and no node of the shape can."""
    if whole_node:
        for i, room in enumerate(rooms):
            if room.gpus >= d.gpus and room.holds(d, replicas) >= replicas:
                return Fit(((i, replicas),), 0)
        return Fit((), 1) if per_node(shape, d) >= replicas else None
    left = replicas
    taken: list[tuple[int, int]] = []
    for i, room in enumerate(rooms):
        if left == 0:
            break
        if room.gpus < d.gpus:  # most rooms are full in a busy round: skip them cheaply
            continue
        n = room.holds(d, left)
        if n > 0:
            taken.append((i, n))
            left -= n
    k = per_node(shape, d)
    return Fit(tuple(taken), -(-left // k) if left else 0)
