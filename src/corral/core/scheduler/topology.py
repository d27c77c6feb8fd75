"""Topology: the smallest domain that holds the whole gang — node, then rack, then zone.

At each level, domains are estimated from their free-GPU histograms and tried tightest
first (best fit: the domain with the fewest free replica slots that still holds the gang),
so big empty racks stay whole for big gangs. The estimate counts GPUs only; a domain is
then filled node by node with the exact check (CPUs, memory, disk, selector, reserved
nodes), and the next domain is tried when that falls short.

Inside a domain the gang spans as few children as it can: the roomiest children first,
the last one swapped for the tightest child that covers the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.scheduler.config import Level
from corral.core.scheduler.domains import Domain
from corral.core.scheduler.filters import CPU_ONLY, Shape, node_slots
from corral.core.scheduler.state import ClusterState

SPREAD_ORDER = (Level.NODE, Level.RACK, Level.ZONE, Level.REGION, Level.PROVIDER, Level.ANY)


@dataclass(frozen=True)
class Fit:
    """Where a gang fits: its GPU class and (node, replicas there), rank 0's node first."""

    gpu_class: int
    level: Level
    nodes: tuple[tuple[int, int], ...]


class Search:
    """One gang search over the current state; `avoid` are nodes reserved for another job."""

    def __init__(self, st: ClusterState, shape: Shape, avoid: frozenset[int]) -> None:
        self.st = st
        self.shape = shape
        self.avoid = avoid
        self.eligible = shape.eligible

    def find(self, classes: tuple[int, ...]) -> Fit | None:
        shape = self.shape
        for level in SPREAD_ORDER:
            if level > shape.spread or (level > Level.NODE and shape.replicas == 1):
                break
            for c in classes:
                fit = self._on_node(c) if level == Level.NODE else self._in_domain(level, c)
                if fit is not None:
                    return fit
        return None

    def usable(self, node: int) -> bool:
        return node not in self.avoid and (self.eligible is None or node in self.eligible)

    # -- the whole gang on one node --------------------------------------------------

    def _on_node(self, c: int) -> Fit | None:
        st, shape = self.st, self.shape
        need = shape.replicas

        def ok(node: int) -> bool:
            return self.usable(node) and node_slots(st, node, c, shape) >= need

        if self.eligible is not None and len(self.eligible) < 256:
            # A narrow selector: look at its nodes directly rather than walk the buckets.
            found = [
                (st.free_gpus(node, c), node)
                for node in self.eligible
                if ok(node) and st.free_gpus(node, c) >= need * shape.gpus
            ]
            best = min(found, default=None)
            node = None if best is None else best[1]
        elif c == CPU_ONLY:
            node = st.best_node_any(ok)
        elif need * shape.gpus >= st.width[c]:
            return None
        else:
            node = st.best_node(c, need * shape.gpus, ok)
        return None if node is None else Fit(c, Level.NODE, ((node, need),))

    # -- across nodes of one domain --------------------------------------------------

    def _in_domain(self, level: Level, c: int) -> Fit | None:
        topo = self.st.topology
        need = self.shape.replicas
        if c == CPU_ONLY:
            estimated = [(self._estimate(d, c), d) for d in topo.by_level[level]]
        else:
            table = self.st.slot_table(level, c, self.shape.gpus)
            estimated = [(n, d) for d, n in table.slots.items()]
        for _, d in sorted(e for e in estimated if e[0] >= need):
            placed = self._fill(topo.domains[d], c, need)
            if sum(n for _, n in placed) == need:
                return Fit(c, level, tuple(placed))
        return None

    def _estimate(self, d: int, c: int) -> int:
        st = self.st
        dom = st.topology.domains[d]
        if c != CPU_ONLY:
            return st.slot_table(dom.level, c, self.shape.gpus).slots.get(d, 0)
        # No GPUs asked: only the exact count over the domain's nodes says anything.
        if dom.nodes:
            return sum(node_slots(self.st, n, c, self.shape) for n in dom.nodes if self.usable(n))
        return sum(self._estimate(child, c) for child in dom.children)

    def _fill(self, dom: Domain, c: int, need: int) -> list[tuple[int, int]]:
        if dom.nodes:
            return self._fill_rack(dom, c, need)
        placed: list[tuple[int, int]] = []
        for child in self._children_order(dom, c, need):
            placed += self._fill(self.st.topology.domains[child], c, need - _total(placed))
            if _total(placed) >= need:
                break
        return placed

    def _fill_rack(self, dom: Domain, c: int, need: int) -> list[tuple[int, int]]:
        st, shape = self.st, self.shape
        room = []
        for node in dom.nodes:
            if self.usable(node):
                n = node_slots(st, node, c, shape)
                if n > 0:
                    room.append((st.free_gpus(node, c), node, n))
        room.sort()  # tightest nodes first: large holes stay whole
        placed: list[tuple[int, int]] = []
        left = need
        for _, node, n in room:
            take = min(n, left)
            placed.append((node, take))
            left -= take
            if left == 0:
                break
        return placed

    def _children_order(self, dom: Domain, c: int, need: int) -> list[int]:
        est = [(self._estimate(child, c), child) for child in dom.children]
        roomiest = sorted((e for e in est if e[0] > 0), key=lambda e: (-e[0], e[1]))
        chosen: list[tuple[int, int]] = []
        total = 0
        for e in roomiest:
            if total >= need:
                break
            chosen.append(e)
            total += e[0]
        if chosen and total >= need:
            # Best fit for the remainder: the tightest child that still covers it.
            remainder = need - (total - chosen[-1][0])
            taken = {child for _, child in chosen[:-1]}
            last = min(
                (e for e in roomiest if e[1] not in taken and e[0] >= remainder), default=None
            )
            if last is not None:
                chosen[-1] = last
        first = [child for _, child in chosen]
        return first + [child for _, child in roomiest if child not in set(first)]


def _total(placed: list[tuple[int, int]]) -> int:
    return sum(n for _, n in placed)
