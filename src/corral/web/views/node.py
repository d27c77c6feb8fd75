"""The node page's view model: `node_detail` (health, events, the last report's signals) and
the node's fleet facts (what runs there with its pages' names, price) in, one page out.

The last report's signals are a cluster admin's (node_detail gives them to no one else):
for anyone else a GPU row shows what the scheduler knows (model, memory, health, allocated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.server.services.fleet_view import NodeFacts
from corral.web.links import workload_page
from corral.web.views.fleet import Cell, NodeCard, node_card
from corral.wire.nodes import HealthEventView, NodeDetail


@dataclass(frozen=True)
class GpuRow:
    cell: Cell
    model: str
    memory_mb: int
    uuid: str
    health: str
    repair: str
    sentence: str | None
    holders: list[str]  # workspace/name #rank of the replicas on it the viewer may see
    present: bool | None  # None: no report
    utilization: float | None
    memory_used_mb: int | None
    memory_total_mb: int | None
    temperature_c: float | None
    power_w: float | None
    ecc: str | None  # "volatile 0 / 0 · aggregate 0 / 2" (corrected / uncorrected)
    throttle: list[str]
    nvlink_down: list[int]
    remapped: str | None
    retired_pages: int | None
    last_xid: str | None
    unknown: list[str]


@dataclass(frozen=True)
class WorkloadRow:
    workspace: str
    name: str
    kind: str
    job: str
    href: str | None
    rank: int
    gpus: list[int]
    state: str


@dataclass(frozen=True)
class EventRow:
    at: float
    kind: str
    text: str
    gpu: int | None
    workloads: list[str]


@dataclass(frozen=True)
class Disk:
    path: str
    role: str
    free_mb: int
    total_mb: int

    @property
    def used_share(self) -> float | None:
        return None if self.total_mb <= 0 else 1 - self.free_mb / self.total_mb


@dataclass(frozen=True)
class NodePage:
    card: NodeCard
    address: str | None
    agent_version: str
    gpu_backend: str
    cpus: float
    memory_mb: int
    disk_mb: int
    runtimes: list[str]
    registered_at: float
    all_labels: list[tuple[str, str]]
    repair: str
    needs_operator: bool
    findings: list[str]
    health_age_s: float | None
    repair_claim_at: float | None
    signals_shown: bool  # the last report's signals are this viewer's to see
    reported: bool  # there is a report
    gpus: list[GpuRow]
    disks: list[Disk]
    memory_available_pct: float | None
    d_state: int | None
    workloads: list[WorkloadRow]
    hidden: int
    events: list[EventRow]
    can_act: bool


def node_page(detail: NodeDetail, facts: NodeFacts, now: float, can_act: bool) -> NodePage:
    card = node_card(facts)
    signals = detail.signals or {}
    by_index = {_int(g.get("index")): g for g in signals.get("gpus", []) if isinstance(g, dict)}
    holders: dict[int, list[str]] = {}
    for r in facts.running:
        for i in r.gpus:
            holders.setdefault(i, []).append(f"{r.workspace}/{r.name} #{r.rank}")
    rows = [
        _gpu_row(
            cell,
            g.model,
            g.memory_mb,
            g.uuid,
            g.health,
            g.repair,
            g.sentence,
            holders.get(g.index, ["a job of another workspace"] if g.allocated else []),
            by_index.get(g.index) if detail.signals is not None else None,
            detail.last_xid.get(str(g.index)),
        )
        for g, cell in zip(detail.node.gpus, card.cells, strict=True)
    ]
    node_signals = signals.get("node") or {}
    v = detail.node
    return NodePage(
        card=card,
        address=v.address,
        agent_version=v.agent_version,
        gpu_backend=v.gpu_backend,
        cpus=v.cpus,
        memory_mb=v.memory_mb,
        disk_mb=v.disk_mb,
        runtimes=[r.name for r in v.runtimes],
        registered_at=v.registered_at,
        all_labels=sorted((v.labels or {}).items()),
        repair=detail.repair,
        needs_operator=detail.needs_operator,
        findings=[_finding(f) for f in detail.findings],
        health_age_s=None if detail.health_at is None else max(0.0, now - detail.health_at),
        repair_claim_at=detail.repair_claim_at,
        signals_shown=detail.signals is not None,
        reported=detail.health_at is not None,
        gpus=rows,
        disks=[_disk(d) for d in node_signals.get("disks") or [] if isinstance(d, dict)],
        memory_available_pct=_float(node_signals.get("memory_available_pct")),
        d_state=_int(node_signals.get("d_state")),
        workloads=[
            WorkloadRow(
                workspace=r.workspace,
                name=r.name,
                kind=r.kind,
                job=r.job,
                href=workload_page(r.kind, r.workspace, r.name),
                rank=r.rank,
                gpus=list(r.gpus),
                state=r.state,
            )
            for r in facts.running
        ],
        hidden=facts.hidden,
        events=[_event(e) for e in detail.events],
        can_act=can_act,
    )


def _gpu_row(
    cell: Cell,
    model: str,
    memory_mb: int,
    uuid: str,
    health: str,
    repair: str,
    sentence: str | None,
    holders: list[str],
    s: Mapping[str, Any] | None,
    xid: HealthEventView | None,
) -> GpuRow:
    s = s or {}
    return GpuRow(
        cell=cell,
        model=model,
        memory_mb=memory_mb,
        uuid=uuid,
        health=health,
        repair=repair,
        sentence=sentence,
        holders=holders,
        present=s.get("present") if s else None,
        utilization=_float(s.get("utilization_pct")),
        memory_used_mb=_int(s.get("memory_used_mb")),
        memory_total_mb=_int(s.get("memory_total_mb")),
        temperature_c=_float(s.get("temperature_c")),
        power_w=_float(s.get("power_w")),
        ecc=ecc(s),
        throttle=[str(t) for t in s.get("throttle") or []],
        nvlink_down=[int(x) for x in s.get("nvlink_down") or [] if isinstance(x, int)],
        remapped=_remapped(s),
        retired_pages=_int(s.get("retired_pages")),
        last_xid=None if xid is None else xid.text,
        unknown=[str(u) for u in s.get("unknown") or []],
    )


def ecc(s: Mapping[str, Any]) -> str | None:
    """ECC errors as 'volatile C / U · aggregate C / U' (corrected / uncorrected): the
    counters that were read; None where none was."""
    parts = []
    for scope in ("volatile", "aggregate"):
        c, u = _int(s.get(f"ecc_{scope}_corrected")), _int(s.get(f"ecc_{scope}_uncorrected"))
        if c is not None or u is not None:
            parts.append(f"{scope} {'?' if c is None else c} / {'?' if u is None else u}")
    return " · ".join(parts) or None


def _remapped(s: Mapping[str, Any]) -> str | None:
    if s.get("remapped_rows_failed"):
        return "row remapping failed"
    if s.get("remapped_rows_pending"):
        return "row remap pending (reset the GPU)"
    return None


def _finding(f: Mapping[str, Any]) -> str:
    where = f"GPU {f['gpu']}: " if f.get("gpu") is not None else ""
    return f"{where}{f.get('sentence', '')} ({f.get('health', '?')}, repair: {f.get('repair')})"


def _event(e: HealthEventView) -> EventRow:
    return EventRow(at=e.at, kind=e.kind, text=e.text, gpu=e.gpu, workloads=list(e.workloads))


def _disk(d: Mapping[str, Any]) -> Disk:
    return Disk(
        path=str(d.get("path", "?")),
        role=str(d.get("role", "?")),
        free_mb=_int(d.get("free_mb")) or 0,
        total_mb=_int(d.get("total_mb")) or 0,
    )


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
