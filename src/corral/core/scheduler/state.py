"""The round's working state: free capacity per node, indexed for best-fit search.

Made from a FleetIndex in O(domains + buckets) — list copies, not per-node work — then
updated in place by `take` and `release` as the round places, preempts and tries
reservations; never copied per job. A node's free-GPU lists are copied on its first
change (copy on write), so the index stays as it was for the next round.

For each GPU class `buckets[c][k]` is a heap of the nodes with exactly k free GPUs of
that class, lowest node index (topology order) first. Entries are invalidated lazily: an
entry is live while the node still has k free GPUs of class c. Best fit for g GPUs is the
first live node of the first non-empty bucket k >= g.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence

from corral.core.scheduler.config import Level
from corral.core.scheduler.domains import slots
from corral.core.scheduler.index import NO_GPU, FleetIndex

__all__ = ["NO_GPU", "ClusterState"]


class ClusterState:
    def __init__(self, index: FleetIndex) -> None:
        nodes = index.nodes
        self.nodes = nodes
        self.index = index.index
        self.classes = index.classes
        self.slot_class = index.slot_class
        self.healthy = index.healthy
        self.width = index.width
        self.topology = index.topology
        self.largest = index.largest
        self.cpu = index.cpu[:]
        self.mem = index.mem[:]
        self.disk = index.disk[:]
        # Copy on write, per node: the index's free GPUs and ports are read through until a
        # node changes (no 10,000-entry copies per round for the GC to walk).
        self._base_free = index.free
        self._base_ports = index.ports
        self._mine: dict[int, dict[int, list[int]]] = {}
        self._ports: dict[int, frozenset[int]] = {}
        self.hist = [{c: h[:] for c, h in d.items()} for d in index.hist]
        self.buckets = {c: [b[:] for b in bs] for c, bs in index.buckets.items()}
        # Domains whose histograms changed, in order: slot tables catch up from here.
        self.changed: list[int] = []
        self._tables: dict[tuple[Level, int, int], SlotTable] = {}

    # -- reading ---------------------------------------------------------------------

    def free_of(self, node: int) -> Mapping[int, Sequence[int]]:
        """Free GPU indices of the node by class."""
        mine = self._mine.get(node)
        return mine if mine is not None else self._base_free[node]

    def free_gpus(self, node: int, c: int) -> int:
        return len(self.free_of(node).get(c, ()))

    def ports_of(self, node: int) -> frozenset[int]:
        return self._ports.get(node, self._base_ports[node])

    def best_node(self, c: int, need: int, ok: Callable[[int], bool]) -> int | None:
        """Best fit: a node with the fewest free GPUs of class c that are >= need and ok."""
        buckets = self.buckets[c]
        for k in range(need, len(buckets)):
            found = self._first_live(c, k, ok)
            if found is not None:
                return found
        return None

    def best_node_any(self, ok: Callable[[int], bool]) -> int | None:
        """For CPU-only work: an ok node with the fewest free GPUs (of any class)."""
        for k in range(max(self.width.values())):
            for c, buckets in self.buckets.items():
                if k < len(buckets):
                    found = self._first_live(c, k, ok)
                    if found is not None:
                        return found
        return None

    def _first_live(self, c: int, k: int, ok: Callable[[int], bool]) -> int | None:
        heap = self.buckets[c][k]
        skipped: list[int] = []
        found: int | None = None
        mine, base = self._mine, self._base_free
        while heap:
            node = heap[0]
            if len((mine.get(node) or base[node])[c]) != k:
                heapq.heappop(heap)  # stale entry: the node moved to another bucket
            elif ok(node):
                found = node
                break
            else:
                skipped.append(heapq.heappop(heap))
        for node in skipped:
            heapq.heappush(heap, node)
        return found

    def slot_table(self, level: Level, c: int, g: int) -> SlotTable:
        """Replica slots of g GPUs of class c per domain at `level`, brought up to date."""
        table = self._tables.get((level, c, g))
        if table is None:
            table = self._tables[(level, c, g)] = SlotTable(self, level, c, g)
        else:
            table.catch_up(self)
        return table

    # -- changing --------------------------------------------------------------------

    def take(self, node: int, c: int, count: int) -> tuple[int, ...]:
        """The `count` lowest free GPUs of class c on the node, now taken."""
        indices = self._own(node)[c]
        got = tuple(indices[:count])
        del indices[:count]
        if count:
            self._moved(node, c, len(indices) + count, len(indices))
        return got

    def take_exact(self, node: int, gpus: Iterable[int]) -> None:
        for c, group in self._by_class(node, gpus).items():
            indices = self._own(node)[c]
            before = len(indices)
            drop = set(group)
            indices[:] = [g for g in indices if g not in drop]
            self._moved(node, c, before, len(indices))

    def release(self, node: int, gpus: Iterable[int]) -> tuple[int, ...]:
        """Give GPUs back; returns those actually freed (healthy ones not free already)."""
        freed: list[int] = []
        for c, group in self._by_class(node, gpus).items():
            indices = self._own(node)[c]
            before = len(indices)
            new = [g for g in group if g not in indices]
            if new:
                indices.extend(new)
                indices.sort()
                self._moved(node, c, before, len(indices))
                freed.extend(new)
        return tuple(freed)

    def use(self, node: int, cpus: float, memory_mb: int, disk_mb: int, sign: int = 1) -> None:
        self.cpu[node] -= sign * cpus
        self.mem[node] -= sign * memory_mb
        self.disk[node] -= sign * disk_mb

    def add_port(self, node: int, port: int) -> None:
        self._ports[node] = self.ports_of(node) | {port}

    def _own(self, node: int) -> dict[int, list[int]]:
        mine = self._mine.get(node)
        if mine is None:
            mine = self._mine[node] = {c: list(g) for c, g in self._base_free[node].items()}
        return mine

    def _by_class(self, node: int, gpus: Iterable[int]) -> dict[int, list[int]]:
        by_class: dict[int, list[int]] = {}
        slot_class = self.slot_class[node]
        for g in gpus:
            c = slot_class.get(g)
            if c is not None:  # an unhealthy or unknown GPU is never free
                by_class.setdefault(c, []).append(g)
        return by_class

    def _moved(self, node: int, c: int, old: int, new: int) -> None:
        chain = self.topology.chain[node]
        for d in chain:
            hist = self.hist[d][c]
            hist[old] -= 1
            hist[new] += 1
        self.changed.extend(chain)
        heapq.heappush(self.buckets[c][new], node)


class SlotTable:
    """For one (level, GPU class, GPUs per replica): each domain's replica slots from its
    histogram, recomputed only for domains changed since it was last asked."""

    def __init__(self, st: ClusterState, level: Level, c: int, g: int) -> None:
        self.c, self.g = c, g
        self.slots = {d: slots(st.hist[d][c], g) for d in st.topology.with_class(level, c)}
        self._seen = len(st.changed)

    def catch_up(self, st: ClusterState) -> None:
        if self._seen < len(st.changed):
            for d in set(st.changed[self._seen :]):
                if d in self.slots:
                    self.slots[d] = slots(st.hist[d][self.c], self.g)
            self._seen = len(st.changed)
