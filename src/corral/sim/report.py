"""The numbers a run reports, as data, one JSON line, or a plain-text table.

Definitions:
- JCT (job completion time): finish - submit, over completed jobs.
- Queueing delay: first start - submit, over jobs that started (waits after a preemption
  or failure show in JCT, not here).
- Utilization: GPUs allocated / all GPUs, time-averaged from the first arrival to the last
  (`utilization`: while jobs keep arriving, the steady state schedulers are compared on),
  and to the last time a job started or ended (`utilization_makespan`, which a long drain
  of the last big jobs dilutes).
- Fragmentation: see metrics.py; time-averaged share of the free GPUs that the workload's
  typical shapes cannot use (`fragmentation`), and fragmented GPUs (`fragmented_gpus`).
- Goodput: useful GPU-hours / allocated GPU-hours, where useful = allocated - lost, and
  lost is the work done since the last checkpoint by attempts that a failure or preemption
  ended.
- Fill runs (`allocation_curve`): allocated / capacity when the GPUs asked for by arrived
  jobs first reach 10%, 20%, … of capacity; `allocation_at_full` at 100%.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from corral.sim.engine import Outcome
from corral.sim.metrics import Series

HOUR_S = 3600.0


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (0 for no values): the smallest value with q of them at or below."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class SimReport:
    policy: str
    seed: int
    nodes: int
    gpus: int
    jobs: int
    completed: int
    unfinished: int
    dropped: int
    avg_jct_s: float
    p50_jct_s: float
    p99_jct_s: float
    avg_queue_s: float
    p50_queue_s: float
    p99_queue_s: float
    utilization: float
    utilization_makespan: float
    fragmentation: float
    fragmented_gpus: float
    preemptions: int
    node_failures: int
    interrupted_attempts: int
    allocated_gpu_hours: float
    lost_gpu_hours: float
    goodput: float
    allocated_cost: float
    makespan_s: float
    rounds: int
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    allocation_curve: tuple[tuple[float, float, float], ...] = ()
    allocation_at_full: float | None = None
    notes: tuple[str, ...] = ()
    series: Series | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "series":
                continue
            value = getattr(self, name)
            if isinstance(value, float):
                value = round(value, 6)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(", ", ": "))


def build_report(
    outcome: Outcome,
    *,
    policy: str,
    seed: int,
    nodes: int,
    gpus: int,
    fill: bool = False,
    notes: tuple[str, ...] = (),
) -> SimReport:
    runs = outcome.jobs
    done = [r for r in runs if r.state == "done" and r.finished_at is not None]
    jct = [r.finished_at - r.job.submit_s for r in done if r.finished_at is not None]
    queue = [r.first_start - r.job.submit_s for r in runs if r.first_start is not None]
    c = outcome.counters
    series = outcome.series
    start = min((r.job.submit_s for r in runs), default=0.0)
    end = max(c.last_activity, start)
    last_arrival = max((r.job.submit_s for r in runs), default=0.0)
    allocated = c.allocated_gpu_s + sum(
        (end - r.started_at) * r.job.total_gpus for r in runs if r.state == "running"
    )
    curve, at_full = _allocation_curve(series, gpus) if fill else ((), None)
    return SimReport(
        policy=policy,
        seed=seed,
        nodes=nodes,
        gpus=gpus,
        jobs=len(runs),
        completed=len(done),
        unfinished=sum(1 for r in runs if r.state in ("pending", "running", "future")),
        dropped=sum(1 for r in runs if r.state == "dropped"),
        avg_jct_s=_mean(jct),
        p50_jct_s=quantile(jct, 0.5),
        p99_jct_s=quantile(jct, 0.99),
        avg_queue_s=_mean(queue),
        p50_queue_s=quantile(queue, 0.5),
        p99_queue_s=quantile(queue, 0.99),
        utilization=_util(series, start, last_arrival, gpus),
        utilization_makespan=_util(series, start, end, gpus),
        fragmentation=series.fragmentation_of_free(start, end),
        fragmented_gpus=series.time_average(series.fragmented, start, end),
        preemptions=c.preemptions,
        node_failures=c.node_failures,
        interrupted_attempts=c.interrupted_attempts,
        allocated_gpu_hours=allocated / HOUR_S,
        lost_gpu_hours=c.lost_gpu_s / HOUR_S,
        goodput=(allocated - c.lost_gpu_s) / allocated if allocated else 1.0,
        allocated_cost=c.allocated_cost,
        makespan_s=end - start,
        rounds=c.rounds,
        failures_by_cause=dict(sorted(c.failures_by_cause.items())),
        allocation_curve=curve,
        allocation_at_full=at_full,
        notes=notes,
        series=series,
    )


def _util(series: Series, start: float, end: float, gpus: int) -> float:
    return series.time_average(series.used, start, end) / gpus if gpus and end > start else 0.0


def _allocation_curve(
    series: Series, capacity: int
) -> tuple[tuple[tuple[float, float, float], ...], float | None]:
    points: list[tuple[float, float, float]] = []
    at_full = None
    step = 1
    for k in range(len(series)):
        arrived = series.arrived[k] / capacity
        while arrived >= step / 10 - 1e-9:
            free = series.up[k] - series.used[k]
            fragmented = series.fragmented[k] / free if free > 0 else 0.0
            points.append((step / 10, series.used[k] / capacity, fragmented))
            if step == 10:
                at_full = series.used[k] / capacity
            step += 1
    return tuple(points), at_full


_ROWS: tuple[tuple[str, str, float], ...] = (
    # (label, field, scale) — times shown in hours where they are long
    ("jobs", "jobs", 1),
    ("completed", "completed", 1),
    ("unfinished", "unfinished", 1),
    ("dropped (fill)", "dropped", 1),
    ("avg JCT (h)", "avg_jct_s", 1 / HOUR_S),
    ("p50 JCT (h)", "p50_jct_s", 1 / HOUR_S),
    ("p99 JCT (h)", "p99_jct_s", 1 / HOUR_S),
    ("avg queueing (h)", "avg_queue_s", 1 / HOUR_S),
    ("p99 queueing (h)", "p99_queue_s", 1 / HOUR_S),
    ("utilization (arrivals)", "utilization", 1),
    ("utilization (makespan)", "utilization_makespan", 1),
    ("fragmentation (of free)", "fragmentation", 1),
    ("fragmented GPUs", "fragmented_gpus", 1),
    ("preemptions", "preemptions", 1),
    ("node failures", "node_failures", 1),
    ("interrupted attempts", "interrupted_attempts", 1),
    ("allocated GPU-h", "allocated_gpu_hours", 1),
    ("lost GPU-h", "lost_gpu_hours", 1),
    ("goodput", "goodput", 1),
    ("cost ($)", "allocated_cost", 1),
    ("makespan (h)", "makespan_s", 1 / HOUR_S),
    ("rounds", "rounds", 1),
)


def _fragmented_at(report: SimReport, arrived: float) -> str:
    point = next((p for p in report.allocation_curve if abs(p[0] - arrived) < 1e-9), None)
    return "-" if point is None else f"{point[2]:.3f}"


def format_table(reports: list[SimReport]) -> str:
    """Reports side by side, one column per run, as plain text (cli/ adds any colour)."""
    header = ["", *(r.policy for r in reports)]
    rows = [header]
    for label, name, scale in _ROWS:
        cells = [label]
        for r in reports:
            value = getattr(r, name)
            cells.append(f"{value:,}" if isinstance(value, int) else f"{value * scale:,.3f}")
        rows.append(cells)
    if any(r.allocation_at_full is not None for r in reports):
        rows.append(
            ["allocated at 100% arrived"]
            + [f"{r.allocation_at_full:.3f}" if r.allocation_at_full else "-" for r in reports]
        )
        rows.append(["fragmentation at 90% arrived"] + [_fragmented_at(r, 0.9) for r in reports])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    notes = sorted({n for r in reports for n in r.notes})
    return "\n".join(lines + [f"note: {n}" for n in notes])
