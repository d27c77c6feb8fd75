"""The topology tree: any > provider > region > zone > rack > node.

Static per fleet: each domain's children, member nodes (racks) and `cap[c][k]` — the
number of its nodes with k healthy GPUs of class c. The changing part, `hist[c][k]` (nodes
with k *free* GPUs), is kept per domain id by the index and the round's state. With these
a gang search asks "how many replicas of g GPUs fit here?" in O(max GPUs per node) without
touching the nodes, and one placement updates five histograms, not the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.core.scheduler.config import Level

# A node's domains, smallest first: rack, zone, region, provider, any.
CHAIN_LEVELS = (Level.RACK, Level.ZONE, Level.REGION, Level.PROVIDER, Level.ANY)

Hist = dict[int, list[int]]  # class -> nodes by free GPUs of that class


@dataclass(eq=False)
class Domain:
    id: int
    level: Level
    name: str
    children: list[int] = field(default_factory=list)  # sub-domains (none for a rack)
    nodes: list[int] = field(default_factory=list)  # member nodes, racks only
    cap: dict[int, list[int]] = field(default_factory=dict)


def chain_keys(topology: tuple[str, ...], node_id: str) -> tuple[tuple[str, ...], ...]:
    """Domain keys for rack, zone, region, provider and any.

    An unknown provider, region or zone is shared: nodes that report no topology (a small
    flat fleet) still take multi-node gangs. An unknown rack is the node alone, because
    claiming an NVLink domain nobody reported would mislead `topology: rack`.
    """
    provider, region, zone, rack = (*topology[:4], "", "", "", "")[:4]
    rack_key = (provider, region, zone, rack) if rack else (provider, region, zone, "", node_id)
    return (rack_key, (provider, region, zone), (provider, region), (provider,), ())


def _name(key: tuple[str, ...]) -> str:
    if len(key) == 5:
        return f"node {key[4]}"
    return "/".join(part or "?" for part in key) or "the fleet"


class Topology:
    """The domains of a fleet, each node's chain of domain ids, and class indexes."""

    def __init__(self, keys: list[tuple[tuple[str, ...], ...]]) -> None:
        self.domains: list[Domain] = []
        self.by_level: dict[Level, list[int]] = {level: [] for level in CHAIN_LEVELS}
        self.chain: list[tuple[int, ...]] = []
        ids: dict[tuple[str, ...], int] = {}
        for node, node_keys in enumerate(keys):
            chain: list[int] = []
            parent: int | None = None
            # Top-down, so each domain is linked to its parent once, when it is created.
            for level, key in zip(reversed(CHAIN_LEVELS), reversed(node_keys), strict=True):
                d = ids.get(key)
                if d is None:
                    d = ids[key] = len(self.domains)
                    self.domains.append(Domain(d, level, _name(key)))
                    self.by_level[level].append(d)
                    if parent is not None:
                        self.domains[parent].children.append(d)
                chain.append(d)
                parent = d
            chain.reverse()
            self.domains[chain[0]].nodes.append(node)
            self.chain.append(tuple(chain))
        self.fleet = self.by_level[Level.ANY][0] if keys else -1
        self._with_class: dict[tuple[Level, int], list[int]] = {}

    def add_capacity(self, node: int, c: int, healthy: int, width: int) -> None:
        for d in self.chain[node]:
            cap = self.domains[d].cap.get(c)
            if cap is None:
                cap = self.domains[d].cap[c] = [0] * width
            cap[healthy] += 1

    def with_class(self, level: Level, c: int) -> list[int]:
        """Domains at `level` that have nodes with GPUs of class c (cached)."""
        key = (level, c)
        found = self._with_class.get(key)
        if found is None:
            found = [d for d in self.by_level[level] if c in self.domains[d].cap]
            self._with_class[key] = found
        return found


def slots(hist: list[int], g: int) -> int:
    """Replicas of g GPUs each that a histogram of nodes by free GPUs can hold."""
    return sum(count * (k // g) for k, count in enumerate(hist) if k >= g and count)


def free_gpus(hist: list[int]) -> int:
    return sum(k * count for k, count in enumerate(hist))
