"""Scores: how the scheduler prefers one fit over another, and the fragmentation figure.

The preferences live where the search is (kept fast by indexes); this page names them:
  - node best fit (state.ClusterState.best_node): the node left with the fewest free
    GPUs of the class after the replica — large holes stay whole;
  - ties go to the lowest node in topology order, which fills racks one after another
    and leaves whole racks (NVLink domains) free for big gangs;
  - domain best fit (topology.Search): the rack, zone… with the fewest free replica
    slots that still holds the gang; inside it, the fewest children, then tightest nodes;
  - GPU class: a job that did not ask for a big GPU takes the smallest that matches.

Fragmentation (after Weng et al., "Beware of Fragmentation", ATC '23): the share of free
GPUs that sit where a job of the expected size cannot use them. With `sizes` (GPUs per
replica -> weight) it is the weighted mean over those sizes; by default the size is the
node's own GPU count: the share of free GPUs on partly used nodes, which an 8-GPU job on
8-GPU nodes (or a 4-GPU one on an NVL72's 4-GPU nodes) cannot use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corral.core.placement import NodeState


def fragmentation_counts(
    nodes: Iterable[tuple[int, int]], sizes: Mapping[int, float] | None = None
) -> float:
    """Fragmentation from (free GPUs, healthy GPUs) per node; 0.0 when nothing is free."""
    pairs = [(free, healthy) for free, healthy in nodes if healthy > 0]
    total = sum(free for free, _ in pairs)
    if total == 0:
        return 0.0
    if not sizes:
        return sum(free for free, healthy in pairs if free < healthy) / total
    weight = sum(sizes.values())
    stranded = sum(p * sum(free for free, _ in pairs if free < size) for size, p in sizes.items())
    return stranded / (weight * total) if weight else 0.0


def fragmentation(nodes: Iterable[NodeState], sizes: Mapping[int, float] | None = None) -> float:
    """Fragmentation of a fleet as a snapshot sees it (healthy GPUs only)."""
    return fragmentation_counts(
        (
            (
                sum(1 for g in n.gpus if g.healthy and g.index not in n.used_gpus),
                sum(1 for g in n.gpus if g.healthy),
            )
            for n in nodes
        ),
        sizes,
    )
