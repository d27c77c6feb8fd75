"""The fleet index: what a round starts from, kept between rounds by a `Scheduler`.

Static per node (GPU classes, healthy GPUs, topology chain) and the base free state
(free GPU indices per class, domain histograms, best-fit buckets). `refresh` takes the
next snapshot and redoes only the nodes whose NodeState object changed — a frozen
NodeState that is the same object is the same value — like kube-scheduler's cache that
re-copies only nodes with a new generation. Any change to the set of nodes, their GPUs
or their topology rebuilds it whole. The result never depends on whether the index was
fresh or refreshed; only the cost does.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import is_not

from corral.core.placement import NodeState
from corral.core.scheduler.domains import Hist, Topology, chain_keys

NO_GPU = -1  # the class of a node without healthy GPUs: it still runs CPU-only replicas


@dataclass(frozen=True)
class GpuClass:
    id: int
    model: str
    memory_mb: int


class FleetIndex:
    def __init__(self, snapshot_nodes: Sequence[NodeState]) -> None:
        # Topology order: the lowest-index tie-break then packs racks one after another.
        nodes = sorted(snapshot_nodes, key=lambda n: (n.topology, n.id))
        self.nodes = nodes
        self.index = {n.id: i for i, n in enumerate(nodes)}
        self.classes: list[GpuClass] = []
        self.slot_class: list[dict[int, int]] = []  # healthy GPU index -> class
        self.healthy: list[dict[int, int]] = []  # class -> healthy GPUs on the node
        # Tuples, not lists: immutable here (a round copies a node's on first change), and
        # tuples of ints are not tracked by the cyclic GC.
        self.free: list[dict[int, tuple[int, ...]]] = []
        self._order: list[tuple[tuple[int, int], ...]] = []  # (GPU index, class), by index
        self._scan_gpus(nodes)
        self.width = {c: 1 for c in range(NO_GPU, len(self.classes))}
        for counts in self.healthy:
            for c, n in counts.items():
                self.width[c] = max(self.width[c], n + 1)
        self.topology = Topology([chain_keys(n.topology, n.id) for n in nodes])
        self.hist: list[Hist] = [{} for _ in self.topology.domains]
        self.buckets: dict[int, list[list[int]]] = {
            c: [[] for _ in range(w)] for c, w in self.width.items()
        }
        for i, counts in enumerate(self.healthy):
            for c, n in counts.items():
                w = self.width[c]
                self.topology.add_capacity(i, c, n, w)
                k = len(self.free[i][c])
                self.buckets[c][k].append(i)  # ascending i: already a valid heap
                for d in self.topology.chain[i]:
                    hist = self.hist[d].get(c)
                    if hist is None:
                        hist = self.hist[d][c] = [0] * w
                    hist[k] += 1
        self.largest = _largest(nodes)
        # Arrays, not lists: a round copies them at C speed, and the GC never walks them.
        self.cpu = array("d", [n.cpus - n.used_cpus for n in nodes])
        self.mem = array("q", [n.memory_mb - n.used_memory_mb for n in nodes])
        self.disk = array("q", [n.disk_mb - n.used_disk_mb for n in nodes])
        self.ports = [n.used_ports for n in nodes]
        self._given: Sequence[NodeState] = snapshot_nodes  # to spot unchanged nodes fast
        self.gpus = sum(sum(h.values()) for h in self.healthy)
        self.mcpus = sum(milli(n.cpus) for n in nodes)  # integers: sums exact in any order
        self.memory_mb = sum(n.memory_mb for n in nodes)

    def _scan_gpus(self, nodes: Sequence[NodeState]) -> None:
        ids: dict[tuple[str, int], int] = {}
        for n in nodes:
            slot_class: dict[int, int] = {}
            healthy: dict[int, int] = {}
            for slot in n.gpus:
                if slot.healthy:
                    key = (slot.model, slot.memory_mb)
                    c = ids.get(key)
                    if c is None:
                        c = ids[key] = len(self.classes)
                        self.classes.append(GpuClass(c, slot.model, slot.memory_mb))
                    slot_class[slot.index] = c
                    healthy[c] = healthy.get(c, 0) + 1
            if not healthy:
                healthy[NO_GPU] = 0
            self.slot_class.append(slot_class)
            self.healthy.append(healthy)
            order = tuple(sorted(slot_class.items()))
            self._order.append(order)
            self.free.append(_free(n, order, healthy))

    def refresh(self, snapshot_nodes: Sequence[NodeState]) -> FleetIndex:
        """This index brought up to the new snapshot; a new one if the fleet's shape changed."""
        if len(snapshot_nodes) != len(self.nodes):
            return FleetIndex(snapshot_nodes)
        # Usually the caller hands the nodes in the same order, most of them the very same
        # objects: compare by identity first and look up only what differs.
        given = self._given
        changed: list[tuple[int, NodeState]] = []
        moved = False  # a node at a new position: then check the ids are each there once
        # Positions whose object differs from last time, found at C speed.
        for pos in compress(range(len(given)), map(is_not, snapshot_nodes, given)):
            n, before = snapshot_nodes[pos], given[pos]
            i = self.index.get(n.id)
            if i is None:
                return FleetIndex(snapshot_nodes)
            moved = moved or n.id != before.id
            if n is not self.nodes[i]:
                changed.append((i, n))
        if moved and len({n.id for n in snapshot_nodes}) != len(self.nodes):
            return FleetIndex(snapshot_nodes)  # an id given twice, another one missing
        self._given = snapshot_nodes
        resized = False
        for i, n in changed:
            old = self.nodes[i]
            if n.topology != old.topology or n.gpus != old.gpus:
                return FleetIndex(snapshot_nodes)
            if (n.cpus, n.memory_mb, n.disk_mb) != (old.cpus, old.memory_mb, old.disk_mb):
                resized = True
                self.mcpus += milli(n.cpus) - milli(old.cpus)
                self.memory_mb += n.memory_mb - old.memory_mb
            self.nodes[i] = n
            self.cpu[i] = n.cpus - n.used_cpus
            self.mem[i] = n.memory_mb - n.used_memory_mb
            self.disk[i] = n.disk_mb - n.used_disk_mb
            self.ports[i] = n.used_ports
            self._refree(i)
        if resized:
            self.largest = _largest(self.nodes)
        if changed:
            self._trim()
        if (
            sum(map(len, (b for bs in self.buckets.values() for b in bs)))
            > 3 * len(self.nodes) + 64
        ):
            self._compact()
        return self

    def _refree(self, i: int) -> None:
        old = self.free[i]
        new = _free(self.nodes[i], self._order[i], self.healthy[i])
        self.free[i] = new
        for c, indices in new.items():
            before, after = len(old[c]), len(indices)
            if before != after:
                for d in self.topology.chain[i]:
                    hist = self.hist[d][c]
                    hist[before] -= 1
                    hist[after] += 1
                heapq.heappush(self.buckets[c][after], i)

    def _trim(self) -> None:
        """Drop stale bucket entries, or every round's copy would pop them again: rebuild a
        bucket that is more than half stale (the fleet histogram counts its live nodes),
        else pop the stale ones off its top."""
        free = self.free
        fleet = self.hist[self.topology.fleet] if self.nodes else {}
        for c, buckets in self.buckets.items():
            live = fleet.get(c)
            for k, heap in enumerate(buckets):
                if live is not None and len(heap) > 2 * live[k] + 16:
                    buckets[k] = sorted({i for i in heap if len(free[i][c]) == k})
                    continue
                while heap and len(free[heap[0]][c]) != k:
                    heapq.heappop(heap)

    def _compact(self) -> None:
        """Drop stale bucket entries (nodes that moved on), which refreshes pile up."""
        for c, buckets in self.buckets.items():
            for k in range(len(buckets)):
                buckets[k] = sorted({i for i in buckets[k] if len(self.free[i][c]) == k})


def _free(
    n: NodeState, order: tuple[tuple[int, int], ...], healthy: dict[int, int]
) -> dict[int, tuple[int, ...]]:
    used = n.used_gpus
    if len(healthy) == 1:  # the usual node: one GPU class
        (c,) = healthy
        return {c: tuple(index for index, _ in order if index not in used)}
    return {c: tuple(i for i, k in order if k == c and i not in used) for c in healthy}


def milli(cpus: float) -> int:
    return round(cpus * 1000)


def _largest(nodes: Sequence[NodeState]) -> tuple[float, int, int]:
    """The largest node by each measure: a replica asking for more never fits."""
    return (
        max((n.cpus for n in nodes), default=0.0),
        max((n.memory_mb for n in nodes), default=0),
        max((n.disk_mb for n in nodes), default=0),
    )
