"""Explain: the facts a pending reason quotes, read from the round's state.

The wording lives in reasons.py; this module finds the numbers (the freest domain at the
level the gang may span, where a reservation is) without changing anything.
"""

from __future__ import annotations

from corral.core.scheduler import reasons
from corral.core.scheduler.config import Level
from corral.core.scheduler.domains import CHAIN_LEVELS, free_gpus, slots
from corral.core.scheduler.filters import CPU_ONLY, Shape
from corral.core.scheduler.state import ClusterState
from corral.core.scheduler.topology import Fit


def no_room(st: ClusterState, shape: Shape, classes: tuple[int, ...], head: str | None) -> str:
    """Why a gang does not fit now; `head`: the job whose reserved nodes it had to avoid."""
    level = Level.NODE if shape.replicas == 1 else shape.spread
    if shape.gpus == 0 or classes == (CPU_ONLY,):
        demand = f"cpus={shape.cpus:g} memory={shape.memory_mb}Mi"
        return reasons.NO_ROOM_CPU.format(replicas=shape.replicas, demand=demand, level=level.word)
    free, room = freest(st, shape, classes, level)
    reason = reasons.NO_ROOM.format(
        replicas=shape.replicas, gpus=shape.gpus, what=shape.what, level=level.word, free=free
    )
    if room >= shape.replicas:
        reason += reasons.SHORT_OF_OTHER
    if head is not None:
        reason += reasons.RESERVED_EXCLUDED.format(head=head)
    return reason


def freest(
    st: ClusterState, shape: Shape, classes: tuple[int, ...], level: Level
) -> tuple[int, int]:
    """The most free GPUs in one domain at `level`, and the most replica slots in one."""
    free = room = 0
    for c in classes:
        if level == Level.NODE:
            top = next(
                (k for k in range(st.width[c] - 1, 0, -1) if st.best_node(c, k, _any) is not None),
                0,
            )
            free, room = max(free, top), max(room, top // shape.gpus)
            continue
        for d in st.topology.with_class(level, c):
            hist = st.hist[d][c]
            free = max(free, free_gpus(hist))
            room = max(room, slots(hist, shape.gpus))
    return free, room


def where(st: ClusterState, fit: Fit) -> str:
    """The domain a fit lies in, as a user reads it: `rack dc/eu/z1/r7`, `node n12`."""
    first = fit.nodes[0][0]
    if fit.level == Level.NODE:
        return f"node {st.nodes[first].name}"
    d = st.topology.chain[first][CHAIN_LEVELS.index(fit.level)]
    return f"{fit.level.word} {st.topology.domains[d].name}"


def _any(node: int) -> bool:
    del node
    return True
