"""Feasibility: which nodes and GPU classes a job's replicas can use, and what never fits.

A job is compiled once per round into a `Shape` (jobs that ask for the same thing share
one), which holds the matching GPU classes, the widest domain the gang may span and the
nodes its selector (and, for a job with an `image`, a container runtime) admits. A shape
that cannot fit even on an empty fleet gets `never`: the job is unresolvable as asked
(Kubernetes' UnschedulableAndUnresolvable).

Spot nodes (label `spot=true`, which a spot pool's nodes register with) take only
preemptible jobs: the cloud reclaims them at a few minutes' notice, and a job that may not
be stopped must not be stopped by that. A non-preemptible job runs there only when its
node_selector asks for `spot=true`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from corral.core.placement import PendingJob
from corral.core.scheduler import reasons
from corral.core.scheduler.config import Level, SchedulerConfig
from corral.core.scheduler.domains import slots
from corral.core.scheduler.gpu_models import matches, never_had
from corral.core.scheduler.state import ClusterState

CPU_ONLY = -2  # pseudo class of a shape without GPUs: any node may hold it
EPS = 1e-9  # CPUs are floats; 0.1 * 3 must fit in 0.3
LEVEL_WORDS = {level.word: level for level in Level}

ShapeKey = tuple[object, ...]

SPOT_LABEL = "spot"
SPOT_VALUE = "true"


def avoids_spot(preemptible: bool, node_selector: Mapping[str, str]) -> bool:
    """Whether a job must stay off spot nodes (see the module's docstring)."""
    return not preemptible and node_selector.get(SPOT_LABEL) != SPOT_VALUE


@dataclass(frozen=True)
class Shape:
    key: ShapeKey
    replicas: int
    gpus: int
    cpus: float
    memory_mb: int
    disk_mb: int
    what: str  # "H100" or "GPUs": words for reasons
    classes: tuple[int, ...]  # matching GPU classes, least capable first; (CPU_ONLY,)
    spread: Level  # widest domain the whole gang may span
    eligible: frozenset[int] | None  # nodes the selector admits; None: all
    never: str | None = None  # why it can never fit as asked; None: it may
    spot_left_out: int = 0  # ready spot nodes `eligible` leaves out (non-preemptible job)


def shape_key(job: PendingJob) -> ShapeKey:
    return (
        job.replicas,
        job.demand,
        job.topology,
        tuple(sorted(job.node_selector.items())),
        tuple(sorted(job.excluded_nodes)),
        job.image,
        avoids_spot(job.preemptible, job.node_selector),
    )


def compile_shape(
    job: PendingJob,
    st: ClusterState,
    config: SchedulerConfig,
    fleet_models: frozenset[str] = frozenset(),
) -> Shape:
    d = job.demand
    what = d.gpu_type or "GPUs"
    spread = config.max_spread if job.topology is None else LEVEL_WORDS.get(job.topology)
    eligible, spot_left_out = _admitted(job, st)
    classes = matching_classes(st, job) if d.gpus > 0 else (CPU_ONLY,)
    base = Shape(
        key=shape_key(job),
        replicas=job.replicas,
        gpus=d.gpus,
        cpus=d.cpus,
        memory_mb=d.memory_mb,
        disk_mb=d.disk_mb,
        what=what,
        classes=classes,
        spread=spread if spread is not None else Level.NODE,
        eligible=eligible,
        spot_left_out=spot_left_out,
    )
    never = _never(job, base, st, spread, fleet_models)
    if never is None:
        return base
    return Shape(**{**base.__dict__, "never": never})


def matching_classes(st: ClusterState, job: PendingJob) -> tuple[int, ...]:
    want = job.demand.gpu_type
    low = job.demand.gpu_min_memory_mb
    found = [
        g
        for g in st.classes
        if (want is None or matches(want, g.model)) and (low is None or g.memory_mb >= low)
    ]
    # A job that did not ask for the big GPUs takes the smaller ones first.
    found.sort(key=lambda g: (g.memory_mb, g.model, g.id))
    return tuple(g.id for g in found)


def node_slots(st: ClusterState, node: int, c: int, shape: Shape) -> int:
    """Replicas of this shape the node can hold now (exact: GPUs, CPUs, memory, disk)."""
    n = shape.replicas
    if shape.gpus:
        n = min(n, len(st.free_of(node).get(c, ())) // shape.gpus)
    if shape.cpus > 0:
        n = min(n, int((st.cpu[node] + EPS) // shape.cpus))
    if shape.memory_mb > 0:
        n = min(n, st.mem[node] // shape.memory_mb)
    if shape.disk_mb > 0:
        n = min(n, st.disk[node] // shape.disk_mb)
    return max(n, 0)


def _runtime_need(job: PendingJob) -> str | None:
    """What an image job needs of a node's container runtime: "runtime", "gpus" or None."""
    if job.image is None:
        return None
    return "gpus" if job.demand.gpus > 0 else "runtime"


def _admitted(job: PendingJob, st: ClusterState) -> tuple[frozenset[int] | None, int]:
    """The nodes the job may use (None: all), and how many spot nodes it would have had but
    for being non-preemptible (for its reason)."""
    runtime = _runtime_need(job)
    spot = _spot_split(st)[0] if avoids_spot(job.preemptible, job.node_selector) else frozenset()
    if not spot:
        return _eligible(st, job.node_selector, job.excluded_nodes, runtime), 0
    if not job.node_selector and not job.excluded_nodes and runtime is None:
        return _spot_split(st)[1], len(spot)  # the common case: every node but the spot ones
    eligible = _eligible(st, job.node_selector, job.excluded_nodes, runtime, spot)
    others = _eligible(st, job.node_selector, job.excluded_nodes, runtime)
    return eligible, len(spot if others is None else spot & others)


# A round's (spot nodes, other nodes), found once per round rather than once per job shape
# (a scan of 10,000 nodes each). A round's nodes do not change.
_SPOT_SPLIT: WeakKeyDictionary[ClusterState, tuple[frozenset[int], frozenset[int]]] = (
    WeakKeyDictionary()
)


def _spot_split(st: ClusterState) -> tuple[frozenset[int], frozenset[int]]:
    found = _SPOT_SPLIT.get(st)
    if found is None:
        spot = {i for i, n in enumerate(st.nodes) if n.labels.get(SPOT_LABEL) == SPOT_VALUE}
        found = (frozenset(spot), frozenset(i for i in range(len(st.nodes)) if i not in spot))
        _SPOT_SPLIT[st] = found
    return found


def _eligible(
    st: ClusterState,
    selector: Mapping[str, str],
    excluded: frozenset[str] = frozenset(),
    runtime: str | None = None,
    spot: frozenset[int] = frozenset(),
) -> frozenset[int] | None:
    """The nodes a job may use (None: all); `spot`: spot nodes it must stay off."""
    if not selector and not excluded and runtime is None and not spot:
        return None
    items = selector.items()
    return frozenset(
        i
        for i, n in enumerate(st.nodes)
        if i not in spot
        and n.id not in excluded
        and all(n.labels.get(k) == v for k, v in items)
        and (runtime is None or n.container_runtime)
        and (runtime != "gpus" or n.container_gpus)
    )


def _never(
    job: PendingJob,
    shape: Shape,
    st: ClusterState,
    spread: Level | None,
    fleet_models: frozenset[str] = frozenset(),
) -> str | None:
    d = job.demand
    if job.replicas < 1:
        return reasons.NO_REPLICAS
    if spread is None:
        return reasons.UNKNOWN_TOPOLOGY.format(topology=job.topology, levels=", ".join(LEVEL_WORDS))
    if shape.eligible is not None and not shape.eligible:
        runtime = _runtime_need(job)
        if runtime is not None and not st.nodes:
            return None  # no ready node at all: that changes when one connects
        if shape.spot_left_out:
            # Spot nodes would do; the job may not use them.
            matching = f" matching node_selector {_selector(job.node_selector)}"
            return reasons.SPOT_ONLY.format(matching=matching if job.node_selector else "")
        admitted = _eligible(st, job.node_selector, job.excluded_nodes)
        if runtime is not None and (admitted is None or admitted):
            # The selector and exclusions leave nodes: none of them has the runtime.
            count = len(st.nodes) if admitted is None else len(admitted)
            return _no_runtime(job, runtime, count)
        if not job.node_selector:
            return reasons.ALL_EXCLUDED.format(count=len(job.excluded_nodes))
        return reasons.SELECTOR_MATCHES_NONE.format(selector=_selector(job.node_selector))
    if not st.nodes:
        return None  # no ready node at all: that changes when one connects
    if shape.eligible is None:
        cpus, memory, disk = st.largest
    else:
        chosen = [st.nodes[i] for i in shape.eligible]
        cpus = max(n.cpus for n in chosen)
        memory = max(n.memory_mb for n in chosen)
        disk = max(n.disk_mb for n in chosen)
    for need, have, unit in (
        (d.cpus, cpus, "CPUs"),
        (d.memory_mb, memory, "Mi memory"),
        (d.disk_mb, disk, "Mi disk"),
    ):
        if need > have + EPS:
            return reasons.NODE_TOO_SMALL.format(need=f"{need:g}", unit=unit, have=f"{have:g}")
    if d.gpus == 0:
        return None
    if not shape.classes:
        unheard = never_had(d.gpu_type, fleet_models) if fleet_models else None
        if unheard is not None:
            return unheard  # a typo, most likely: not a wait for capacity
        models = sorted({g.model for g in st.classes}) or ["none"]
        each = f" with at least {d.gpu_min_memory_mb}Mi each" if d.gpu_min_memory_mb else ""
        return reasons.NO_SUCH_GPU.format(what=shape.what, memory=each, models=", ".join(models))
    widest = max(st.width[c] - 1 for c in shape.classes)
    if d.gpus > widest:
        return reasons.REPLICA_TOO_BIG.format(gpus=d.gpus, what=shape.what, have=widest)
    return _gang_never(shape, st)


def _gang_never(shape: Shape, st: ClusterState) -> str | None:
    if shape.replicas == 1:
        return None
    if shape.spread == Level.NODE:
        best = max((st.width[c] - 1) // shape.gpus for c in shape.classes)
    else:
        domains = st.topology.domains
        best = max(
            slots(domains[dom].cap[c], shape.gpus)
            for c in shape.classes
            for dom in st.topology.with_class(shape.spread, c)
        )
    if best >= shape.replicas:
        return None
    return reasons.GANG_TOO_BIG.format(
        replicas=shape.replicas,
        gpus=shape.gpus,
        what=shape.what,
        level=shape.spread.word,
        best=f"{best} such replica{'' if best == 1 else 's'}",
    )


def _no_runtime(job: PendingJob, need: str, count: int) -> str:
    where = "ready node" + ("" if count == 1 else "s")
    if job.node_selector:
        where += f" matching node_selector {_selector(job.node_selector)}"
    none = f"the one {where} has none" if count == 1 else f"none of the {count} {where} has one"
    return reasons.NO_RUNTIME.format(
        image=job.image,
        gpus=reasons.NO_RUNTIME_GPUS if need == "gpus" else "",
        none=none,
    )


def _selector(selector: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
