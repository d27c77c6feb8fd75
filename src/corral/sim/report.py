"""The numbers a run reports, as data, one JSON line, or a plain-text table.

Definitions (JSON keeps fractions and seconds; the table shows %, hours, GPUs and $):
- JCT (job completion time): finish - submit, over completed jobs (s).
- Queueing delay: first start - submit, over jobs that started (s; waits after a
  preemption or failure show in JCT, not here). `waited`: jobs whose first start came
  after their submit, or that never started.
- Utilization: GPU-hours allocated / GPU-hours of the whole fleet, from the first arrival
  to the last (`utilization`: while jobs keep arriving, the steady state schedulers are
  compared on), and to the last time a job started or ended (`utilization_makespan`, which
  a long drain of the last big jobs dilutes). A fraction; the table shows %.
  `peak_used_gpus`: the most GPUs allocated at any instant.
- Fragmentation (see metrics.py): idle GPUs that a job drawn from the run's mix of
  shapes cannot use where they are. `fragmented_gpus` and `idle_gpus`: time-averaged, in
  GPUs; `fragmentation` = fragmented / idle GPU-hours (so fragmented_gpus = fragmentation
  x idle_gpus), comparable across fleets of any size.
- Goodput: useful GPU-hours / allocated GPU-hours, where useful = allocated - lost, and
  lost is the work done since the last checkpoint by attempts that a failure or preemption
  ended.
- Cost ($): allocated GPU-hours x each node's price per GPU-hour; None when the cluster
  has no prices (OpenB's node list has none), rather than a misleading $0.
- With pools: `node_cost` ($) = node-hours x each pool's price per node-hour, nodes billed
  from launch to release as a cloud bills them (what the fleet costs, used or not);
  `node_hours` per pool, `peak_nodes`, `launches`, `releases`. None without pools.
  Utilization is then of the GPUs the fleet had at each instant (its size changes), not
  of the pools' maximum.
- Fill runs (`allocation_curve`): allocated / capacity when the GPUs asked for by arrived
  jobs first reach 10%, 20%, … of capacity; `allocation_at_full` at 100%.

A run in which no job waited says so in its notes: its queueing figures are zero because
the fleet was never the bottleneck, not because a policy is good.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from corral.sim.engine import Outcome
from corral.sim.metrics import Series
from corral.sim.supply import Supply

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
    allocated_cost: float | None  # None: the cluster has no prices
    makespan_s: float
    rounds: int
    waited: int = 0
    peak_used_gpus: int = 0
    idle_gpus: float = 0.0
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    allocation_curve: tuple[tuple[float, float, float], ...] = ()
    allocation_at_full: float | None = None
    notes: tuple[str, ...] = ()
    node_cost: float | None = None  # pools: node-hours x price ($)
    node_hours: float | None = None
    pool_node_hours: dict[str, float] = field(default_factory=dict)
    peak_nodes: int = 0
    launches: int = 0
    releases: int = 0
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


def supply_figures(supply: Supply, end: float) -> dict[str, Any]:
    """The pools' figures for SimReport (see the module's docstring)."""
    seconds = supply.node_seconds(end)
    return {
        "node_cost": supply.cost(end),
        "node_hours": math.fsum(seconds.values()) / HOUR_S,
        "pool_node_hours": {name: s / HOUR_S for name, s in sorted(seconds.items())},
        "peak_nodes": supply.stats.peak_nodes,
        "launches": supply.stats.launches,
        "releases": supply.stats.releases,
    }


def build_report(
    outcome: Outcome,
    *,
    policy: str,
    seed: int,
    nodes: int,
    gpus: int,
    fill: bool = False,
    priced: bool = True,
    notes: tuple[str, ...] = (),
    elastic: bool = False,
) -> SimReport:
    """The report of a run; `elastic`: the fleet grew and shrank (pools), so utilization
    is over the GPUs up at each instant."""
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
    waited = sum(
        1
        for r in runs
        if (r.first_start is not None and r.first_start > r.job.submit_s)
        or (r.first_start is None and r.state == "pending")
    )
    peak = int(max(series.used, default=0))
    utilization = _util(series, start, last_arrival, gpus, elastic)
    idle = series.time_average(series.idle(), start, end)
    fragmented = series.time_average(series.fragmented, start, end)
    notes = tuple(notes)
    if not priced:
        notes += (
            "cost: n/a, the cluster has no prices (give --cluster FILE with price_per_gpu_hour)",
        )
    if runs and not waited and not fill:
        notes += (
            f"no job waited: the fleet was never the bottleneck (peak "
            f"{peak:,} of {gpus:,} GPUs allocated, {_pct(peak / gpus if gpus else 0.0)}; "
            f"utilization {_pct(utilization)} of GPU-hours); to compare policies, use a "
            "smaller fleet (--gpus N) or a fill run (--fill 1.0)",
        )
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
        utilization=utilization,
        utilization_makespan=_util(series, start, end, gpus, elastic),
        fragmentation=fragmented / idle if idle > 0 else 0.0,
        fragmented_gpus=fragmented,
        preemptions=c.preemptions,
        node_failures=c.node_failures,
        interrupted_attempts=c.interrupted_attempts,
        allocated_gpu_hours=allocated / HOUR_S,
        lost_gpu_hours=c.lost_gpu_s / HOUR_S,
        goodput=(allocated - c.lost_gpu_s) / allocated if allocated else 1.0,
        allocated_cost=c.allocated_cost if priced else None,
        makespan_s=end - start,
        rounds=c.rounds,
        waited=waited,
        peak_used_gpus=peak,
        idle_gpus=idle,
        failures_by_cause=dict(sorted(c.failures_by_cause.items())),
        allocation_curve=curve,
        allocation_at_full=at_full,
        notes=notes,
        series=series,
    )


def _pct(share: float) -> str:
    """A share as a percentage that never rounds a small nonzero value to 0%."""
    if share and abs(share) < 0.0001:
        return "<0.01%"
    return f"{share * 100:.2f}%"


def _util(series: Series, start: float, end: float, gpus: int, elastic: bool = False) -> float:
    if end <= start:
        return 0.0
    used = series.time_average(series.used, start, end)
    if elastic:
        up = series.time_average(series.up, start, end)
        return used / up if up else 0.0
    return used / gpus if gpus else 0.0


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


# (label with its unit, field, how to show it): "n" a count, "h" seconds shown in hours,
# "%" a fraction shown as a percentage, "x" a plain quantity with 1 decimal, "$" a cost.
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("jobs", "jobs", "n"),
    ("completed", "completed", "n"),
    ("unfinished", "unfinished", "n"),
    ("dropped (fill)", "dropped", "n"),
    ("jobs that waited", "waited", "n"),
    ("avg JCT (h)", "avg_jct_s", "h"),
    ("p50 JCT (h)", "p50_jct_s", "h"),
    ("p99 JCT (h)", "p99_jct_s", "h"),
    ("avg queueing (h)", "avg_queue_s", "h"),
    ("p99 queueing (h)", "p99_queue_s", "h"),
    ("utilization, arrivals (% of GPU-h)", "utilization", "%"),
    ("utilization, makespan (% of GPU-h)", "utilization_makespan", "%"),
    ("peak allocated (GPUs)", "peak_used_gpus", "n"),
    ("idle (GPUs, time-avg)", "idle_gpus", "x"),
    ("fragmented (GPUs, time-avg)", "fragmented_gpus", "x"),
    ("fragmentation (% of idle GPU-h)", "fragmentation", "%"),
    ("preemptions", "preemptions", "n"),
    ("node failures", "node_failures", "n"),
    ("interrupted attempts", "interrupted_attempts", "n"),
    ("allocated (GPU-h)", "allocated_gpu_hours", "x"),
    ("lost (GPU-h)", "lost_gpu_hours", "x"),
    ("goodput (% of allocated GPU-h)", "goodput", "%"),
    ("cost ($)", "allocated_cost", "$"),
    ("makespan (h)", "makespan_s", "h"),
    ("placement rounds", "rounds", "n"),
)
# Shown when a run has pools.
_POOL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("node cost ($, node-hours x price)", "node_cost", "$"),
    ("node-hours", "node_hours", "x"),
    ("peak nodes", "peak_nodes", "n"),
    ("nodes launched", "launches", "n"),
    ("nodes released", "releases", "n"),
)

DEFINITIONS = (
    "fragmented GPUs: idle GPUs that a job drawn from this run's mix of job shapes could "
    "not use where they are (too few free on their node, the wrong model, or too little "
    "CPU or memory beside them; FGD, ATC'23), averaged over time"
)


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "n":
        return f"{int(value):,}"
    if kind == "h":
        return f"{value / HOUR_S:,.3f}"
    if kind == "%":
        return _pct(value)
    if kind == "$":
        return f"${value:,.2f}"
    return f"{value:,.1f}"


def _fragmented_at(report: SimReport, arrived: float) -> str:
    point = next((p for p in report.allocation_curve if abs(p[0] - arrived) < 1e-9), None)
    return "-" if point is None else _pct(point[2])


def format_table(reports: list[SimReport]) -> str:
    """Reports side by side, one column per run, as plain text (cli/ adds any colour)."""
    header = ["", *(r.policy for r in reports)]
    rows = [header]
    pools = any(r.node_cost is not None for r in reports)
    for label, name, kind in _ROWS + (_POOL_ROWS if pools else ()):
        cells = [_cell(getattr(r, name), kind) for r in reports]
        if name.endswith("_jct_s"):  # over completed jobs: none (a fill run) is not 0 h
            cells = [c if r.completed else "n/a" for c, r in zip(cells, reports, strict=True)]
        rows.append([label, *cells])
    if any(r.allocation_at_full is not None for r in reports):
        rows.append(
            ["allocated at 100% arrived (% of GPUs)"]
            + [_cell(r.allocation_at_full, "%") for r in reports]
        )
        rows.append(
            ["fragmentation at 90% arrived (% of idle GPUs)"]
            + [_fragmented_at(r, 0.9) for r in reports]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    return "\n".join(lines + _notes(reports) + [f"definition: {DEFINITIONS}"])


def _notes(reports: list[SimReport]) -> list[str]:
    """Each note once; one that only some runs have names their policies."""
    notes = sorted({n for r in reports for n in r.notes})
    out = []
    for n in notes:
        having = [r.policy for r in reports if n in r.notes]
        prefix = "" if len(having) == len(reports) else ", ".join(having) + ": "
        out.append(f"note: {prefix}{n}")
    return out
