"""The fleet page's view model: nodes (fleet_view.NodeFacts) in, a grid of GPU cells grouped
provider → region → zone → rack, with totals, out.

A GPU cell shows one state, the first that holds of:

    lost       its node is lost (silent past the deadline): nothing is known of it
    unhealthy  its own checks failed (or the scheduler may not place on it), or its node's
    cordoned   its node takes nothing new (an operator, a drain, recovery)
    allocated  a replica holds it
    idle       free to take work

so the colour says first whether the GPU can be counted on at all. `busy` keeps what the
state hides (a cordoned node's GPUs still running work), `degraded` marks a GPU whose checks
warn, and `utilization` (0-100, where reported) shades the cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import urlencode

from corral.core.health import Health
from corral.core.states import NodeCondition
from corral.server.services.fleet_view import NodeFacts
from corral.web.links import workload_page
from corral.wire.api import GpuView, NodeView

MISSING = "—"
TOPOLOGY = ("provider", "region", "zone", "rack")
RUNNING_SHOWN = 3  # workloads named on a card; the rest are counted
REFRESH_S = 3
BIG_FLEET = 300  # nodes shown
BIG_FLEET_REFRESH_S = 10


class CellState(StrEnum):
    IDLE = "idle"
    ALLOCATED = "allocated"
    CORDONED = "cordoned"
    UNHEALTHY = "unhealthy"
    LOST = "lost"


class Cell(NamedTuple):
    """One GPU. A tuple: a fleet page makes 8,000 of them per render."""

    gpu: int  # its index on the node
    model: str
    state: CellState
    busy: bool  # a replica holds it, whatever its state shows
    degraded: bool
    utilization: int | None
    title: str  # everything about it in words (the cell's tooltip)
    classes: str  # "gpu cordoned busy"


@dataclass(frozen=True)
class Workload:
    """A workload on a node, linked to its page."""

    label: str  # workspace/name
    href: str | None  # under the console's prefix; None: a pod (it has no page of its own)
    kind: str


@dataclass(frozen=True)
class NodeCard:
    name: str
    condition: NodeCondition
    cordoned: bool
    cordon_reason: str | None
    health: str
    health_summary: str | None
    connected: bool
    heartbeat_age_s: float | None
    shape: str  # "8x H100 (80 GB)"
    labels: list[tuple[str, str]]
    cells: list[Cell]
    workloads: list[Workload]
    more_workloads: int  # visible workloads not named on the card
    hidden: int  # replicas of workspaces the viewer may not see
    price_per_hour: float | None
    topology: tuple[str, str, str, str]

    @property
    def classes(self) -> str:
        out = ["node", self.condition.value]
        if self.cordoned and self.condition != NodeCondition.CORDONED:
            out.append("cordoned")
        return " ".join(out)

    @property
    def labels_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.labels)


@dataclass(frozen=True)
class Rack:
    region: str
    zone: str
    rack: str
    nodes: list[NodeCard]

    @property
    def path(self) -> str:
        return f"{self.region} / {self.zone} / {self.rack}"


@dataclass(frozen=True)
class Provider:
    name: str
    racks: list[Rack]

    @property
    def title(self) -> str:
        return "no provider label" if self.name == MISSING else self.name

    @property
    def gpus(self) -> int:
        return sum(len(n.cells) for r in self.racks for n in r.nodes)

    @property
    def nodes(self) -> int:
        return sum(len(r.nodes) for r in self.racks)


@dataclass(frozen=True)
class ModelTotal:
    model: str
    counts: dict[CellState, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Totals:
    nodes: int
    gpus: int
    by_state: dict[CellState, int]
    by_model: list[ModelTotal]
    cost_per_hour: float | None  # of the priced nodes; None when none has a price
    unpriced_nodes: int

    @property
    def allocated_share(self) -> float | None:
        """Allocated of the GPUs in service (allocated + idle)."""
        serving = self.by_state[CellState.ALLOCATED] + self.by_state[CellState.IDLE]
        return None if serving == 0 else self.by_state[CellState.ALLOCATED] / serving


@dataclass(frozen=True)
class Filters:
    model: str | None = None
    condition: NodeCondition | None = None

    def query(self) -> str:
        parts = []
        if self.model:
            parts.append(("model", self.model))
        if self.condition:
            parts.append(("condition", self.condition.value))
        return urlencode(parts)

    def keeps(self, view: NodeView) -> bool:
        if self.condition is not None and view.condition != self.condition:
            return False
        return not self.model or any(g.model == self.model for g in view.gpus)


@dataclass(frozen=True)
class Fleet:
    providers: list[Provider]
    totals: Totals
    filters: Filters
    models: list[str]  # every GPU model in the fleet (the filter's choices)
    all_nodes: int
    can_act: bool
    refresh_s: int
    conditions: list[str] = field(default_factory=lambda: [c.value for c in NodeCondition])


def fleet(facts: Sequence[NodeFacts], filters: Filters, can_act: bool) -> Fleet:
    models = sorted({g.model for f in facts for g in f.view.gpus})
    cards = [node_card(f) for f in facts if filters.keeps(f.view)]
    return Fleet(
        providers=group(cards),
        totals=totals(cards),
        filters=filters,
        models=models,
        all_nodes=len(facts),
        can_act=can_act,
        # A big fleet's grid is a megabyte of cells: polled less often.
        refresh_s=REFRESH_S if len(cards) <= BIG_FLEET else BIG_FLEET_REFRESH_S,
    )


def _order(value: str) -> tuple[bool, str]:
    return (value == MISSING, value)  # nodes without a label last


def group(cards: Iterable[NodeCard]) -> list[Provider]:
    """Providers, then racks by region/zone/rack, then nodes by name; missing labels last."""
    by_path: dict[tuple[str, str, str, str], list[NodeCard]] = {}
    for card in cards:
        by_path.setdefault(card.topology, []).append(card)
    providers: dict[str, list[Rack]] = {}
    for path in sorted(by_path, key=lambda p: tuple(_order(v) for v in p)):
        nodes = sorted(by_path[path], key=lambda c: c.name)
        providers.setdefault(path[0], []).append(Rack(path[1], path[2], path[3], nodes))
    return [Provider(name, racks) for name, racks in providers.items()]


def cell_state(node: NodeView, gpu: GpuView) -> CellState:
    return _gpu_state(_node_floor(node), gpu)


def _node_floor(node: NodeView) -> CellState | None:
    """What the node makes of all its GPUs, where it decides alone (None: each GPU says)."""
    if node.condition == NodeCondition.LOST:
        return CellState.LOST
    if node.condition == NodeCondition.UNHEALTHY:
        return CellState.UNHEALTHY
    if node.condition == NodeCondition.CORDONED or node.cordon_reason is not None:
        return CellState.CORDONED
    return None


def _gpu_state(floor: CellState | None, gpu: GpuView) -> CellState:
    if floor is CellState.LOST or floor is CellState.UNHEALTHY:
        return floor
    if gpu.health == Health.UNHEALTHY or not gpu.healthy:
        return CellState.UNHEALTHY
    if floor is not None:
        return floor
    return CellState.ALLOCATED if gpu.allocated else CellState.IDLE


def shade(utilization: float | None) -> int | None:
    """A reported utilization as a whole percent in 0..100; None where none was reported."""
    if utilization is None or utilization != utilization:  # NaN: not a figure
        return None
    return max(0, min(100, round(utilization)))


def node_card(f: NodeFacts) -> NodeCard:
    v = f.view
    on_gpu: dict[int, list[str]] = {}
    for r in f.running:
        for i in r.gpus:
            on_gpu.setdefault(i, []).append(f"{r.workspace}/{r.name} #{r.rank}")
    floor = _node_floor(v)
    use = f.utilization
    cells = [_cell(floor, g, on_gpu.get(g.index, []), use.get(g.index)) for g in v.gpus]
    seen: dict[str, Workload] = {}
    for r in f.running:
        label = f"{r.workspace}/{r.name}"
        seen.setdefault(label, Workload(label, workload_page(r.kind, r.workspace, r.name), r.kind))
    workloads = list(seen.values())
    labels = v.labels or {}
    path = (labels.get(k) or MISSING for k in TOPOLOGY)
    return NodeCard(
        name=v.name,
        condition=v.condition,
        cordoned=v.condition == NodeCondition.CORDONED or v.cordon_reason is not None,
        cordon_reason=v.cordon_reason,
        health=v.health,
        health_summary=v.health_summary,
        connected=v.connected,
        heartbeat_age_s=v.heartbeat_age_s,
        shape=shape(v.gpus),
        labels=sorted((k, val) for k, val in labels.items() if k not in TOPOLOGY),
        cells=cells,
        workloads=workloads[:RUNNING_SHOWN],
        more_workloads=max(0, len(workloads) - RUNNING_SHOWN),
        hidden=f.hidden,
        price_per_hour=f.price_per_hour,
        topology=(next(path), next(path), next(path), next(path)),
    )


def shape(gpus: Sequence[GpuView]) -> str:
    """'8x H100 (80 GB)', '2x A100 (40 GB) + 1x T4 (16 GB)', or 'no GPUs'."""
    if not gpus:
        return "no GPUs"
    counts: dict[tuple[str, int], int] = {}
    for g in gpus:
        key = (g.model, round(g.memory_mb / 1024))
        counts[key] = counts.get(key, 0) + 1
    return " + ".join(f"{n}x {m} ({gb} GB)" for (m, gb), n in counts.items())


_QUIET_HEALTH = frozenset({Health.HEALTHY, Health.UNKNOWN})


def _cell(floor: CellState | None, gpu: GpuView, holders: list[str], use: float | None) -> Cell:
    # Made 8,000 times a page: plain string building, no enum .value lookups.
    state = _gpu_state(floor, gpu)
    pct = shade(use)
    title = f"GPU {gpu.index} · {gpu.model} · {state}"
    if gpu.health not in _QUIET_HEALTH:
        title += f" · {gpu.sentence or gpu.health}"
    if gpu.allocated:
        title += " · " + (", ".join(holders) if holders else "a job of another workspace")
    if pct is not None:
        title += f" · {pct}% utilized"
    degraded = gpu.health == Health.DEGRADED
    classes = f"gpu {state}"
    if degraded:
        classes += " degraded"
    if gpu.allocated and state is not CellState.ALLOCATED:
        classes += " busy"
    return Cell(gpu.index, gpu.model, state, gpu.allocated, degraded, pct, title, classes)


def totals(cards: Sequence[NodeCard]) -> Totals:
    by_state = dict.fromkeys(CellState, 0)
    by_model: dict[str, dict[CellState, int]] = {}
    cost = 0.0
    priced = 0
    for card in cards:
        for cell in card.cells:
            by_state[cell.state] += 1
            counts = by_model.get(cell.model)
            if counts is None:
                counts = by_model[cell.model] = dict.fromkeys(CellState, 0)
            counts[cell.state] += 1
        if card.price_per_hour is not None:
            cost += card.price_per_hour
            priced += 1
    return Totals(
        nodes=len(cards),
        gpus=sum(by_state.values()),
        by_state=by_state,
        by_model=[ModelTotal(m, c) for m, c in sorted(by_model.items())],
        cost_per_hour=cost if priced else None,
        unpriced_nodes=len(cards) - priced,
    )
