"""The Simulation page's view: saved runs (sim/saved.py) → the rows of the list, the
panels `corral sim --plot` draws (sim/plot.py), and each panel's series as chart JSON.

The panels are plot.py's, from the same columns and with the same units: GPUs allocated
(% of the fleet), GPUs queued, fragmented (% of idle GPUs) over simulated time, and for
fill runs the allocation curve. A run's reports (a comparison: `-p corral -p fifo`) are
drawn over each other, as `--plot` draws a list of reports. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from corral.sim.metrics import Series
from corral.sim.report import SimReport, format_table
from corral.sim.saved import RunInputs, SavedRun

NEVER_QUEUED = "no job waited: the fleet was never the bottleneck"


@dataclass(frozen=True)
class Panel:
    key: str
    title: str  # what the y axis shows, with its unit (plot.py's label)


TIME_PANELS = (
    Panel("utilization", "GPUs allocated (% of fleet)"),
    Panel("queue", "GPUs queued (GPUs)"),
    Panel("fragmentation", "fragmented (% of idle GPUs)"),
)
ALLOCATION = Panel("allocation", "GPUs allocated (% of fleet) as demand arrives")
PANEL_KEYS = frozenset(p.key for p in (*TIME_PANELS, ALLOCATION))


@dataclass(frozen=True)
class RunRow:
    """One report of a saved run, as a row of the list; a run's first row carries the
    cells it shares with the others (when, input), spanning `span` rows."""

    run_id: str
    first: bool
    span: int
    saved_at: float
    source: str
    policy: str
    seed: int
    nodes: int
    gpus: int
    jobs: int
    utilization: float
    avg_queue_s: float
    p50_jct_s: float | None  # None: no job completed (a fill run), not 0
    p99_jct_s: float | None
    goodput: float
    cost: float | None  # node cost with pools, else allocated GPU-hours x price; None: no prices
    selected: bool


@dataclass(frozen=True)
class RunDetail:
    run: SavedRun
    source: str
    facts: tuple[tuple[str, str], ...]  # what the run was asked, as label → value
    table: str  # the table `corral sim` printed
    panels: tuple[Panel, ...]
    downsampled: bool  # some series were thinned to fit a saved run


def source(inputs: RunInputs, full_paths: bool) -> str:
    """The workload, e.g. `openb: openb_pod_list_default.csv`. Paths are of the machine
    the CLI ran on: in full for a cluster admin, else just the file's name (where the
    operator keeps files is the operator's business, as node addresses are)."""
    if inputs.trace is None:
        return inputs.format
    return f"{inputs.format}: {_path(inputs.trace, full_paths)}"


def _path(value: str, full: bool) -> str:
    return value if full else PurePath(value).name


def cost(report: SimReport) -> float | None:
    return report.node_cost if report.node_cost is not None else report.allocated_cost


def run_rows(runs: tuple[SavedRun, ...], selected: str | None, full_paths: bool) -> list[RunRow]:
    rows = []
    for run in runs:
        for i, r in enumerate(run.reports):
            rows.append(
                RunRow(
                    run_id=run.id,
                    first=i == 0,
                    span=len(run.reports),
                    saved_at=run.saved_at,
                    source=source(run.inputs, full_paths),
                    policy=r.policy,
                    seed=r.seed,
                    nodes=r.nodes,
                    gpus=r.gpus,
                    jobs=r.jobs,
                    utilization=r.utilization,
                    avg_queue_s=r.avg_queue_s,
                    p50_jct_s=r.p50_jct_s if r.completed else None,
                    p99_jct_s=r.p99_jct_s if r.completed else None,
                    goodput=r.goodput,
                    cost=cost(r),
                    selected=run.id == selected,
                )
            )
    return rows


def panels(run: SavedRun) -> tuple[Panel, ...]:
    fill = any(r.allocation_curve for r in run.reports)
    return (*TIME_PANELS, ALLOCATION) if fill else TIME_PANELS


def detail(run: SavedRun, full_paths: bool) -> RunDetail:
    i = run.inputs
    facts: list[tuple[str, str]] = [("workload", source(i, full_paths))]
    if i.cluster is not None:
        facts.append(("cluster", _path(i.cluster, full_paths)))
    if i.pools is not None:
        facts.append(("pools", _path(i.pools, full_paths)))
    if i.gpus is not None:
        facts.append(("GPUs asked", f"{i.gpus:,}"))
    if i.max_jobs is not None:
        facts.append(("first jobs only", f"{i.max_jobs:,}"))
    if i.fill is not None:
        facts.append(("fill", f"{i.fill:g} x capacity"))
    facts.append(("failures", i.failures or "none"))
    facts.append(("seed", str(i.seed)))
    downsampled = any(
        r.series is not None and n > len(r.series)
        for r, n in zip(run.reports, run.points, strict=True)
    )
    return RunDetail(
        run=run,
        source=source(i, full_paths),
        facts=tuple(facts),
        table=format_table(list(run.reports)),
        panels=panels(run),
        downsampled=downsampled,
    )


def time_unit(run: SavedRun) -> tuple[str, float]:
    """The unit simulated time reads best in: plot.py's hours, and days beyond 3 days;
    a run of minutes in minutes or seconds (ticks of 0.001 h say nothing)."""
    longest = max(
        (r.series.t[-1] for r in run.reports if r.series is not None and len(r.series)),
        default=0.0,
    )
    if longest > 3 * 86400:
        return "days", 86400.0
    if longest > 2 * 3600:
        return "h", 3600.0
    return ("min", 60.0) if longest > 120 else ("s", 1.0)


def panel_data(run: SavedRun, key: str) -> dict[str, Any]:
    """Chart JSON of one panel: {"x": [...], "series": [{"label", "unit", "values"}]} (the
    shape console.js reads) plus how to draw it: `x_label`, `x_unit` and `x_per` (x is in
    simulated seconds; divide by x_per to show x_unit), `stepped`, `y_label` (the y axis's
    unit: the panel's title says what it is), `note`."""
    if key == ALLOCATION.key:
        return _allocation(run)
    panel = next((p for p in TIME_PANELS if p.key == key), None)
    if panel is None:
        raise KeyError(key)
    lines: list[tuple[str, list[float], list[float]]] = []
    for r in run.reports:
        s = r.series
        if s is None or not len(s) or not r.gpus:
            continue
        lines.append((r.policy, list(s.t), _column(key, s, r.gpus)))
    x, columns = merge_steps([(t, v) for _, t, v in lines])
    unit, per = time_unit(run)
    quiet = key == "queue" and bool(lines) and not any(any(v) for _, _, v in lines)
    unit_of = "GPUs" if key == "queue" else "%"
    return {
        "x": x,
        "series": [
            {"label": label, "unit": unit_of, "values": values}
            for (label, _, _), values in zip(lines, columns, strict=True)
        ],
        "x_label": "simulated time",
        "x_unit": unit,
        "x_per": per,
        "y_label": unit_of,
        "stepped": True,
        "note": NEVER_QUEUED if quiet else None,
    }


def _column(key: str, s: Series, gpus: int) -> list[float]:
    if key == "utilization":
        return [100 * u / gpus for u in s.used]
    if key == "queue":
        return list(s.queued)
    return [
        100 * f / (up - used) if up > used else 0.0
        for f, up, used in zip(s.fragmented, s.up, s.used, strict=True)
    ]


def merge_steps(
    lines: list[tuple[list[float], list[float]]],
) -> tuple[list[float], list[list[float | None]]]:
    """Step series sampled at different instants on one x axis (uPlot's shape): the union
    of their times, each line's value held from its last sample (a step function), and
    None outside the line's own time span."""
    x = sorted({t for ts, _ in lines for t in ts})
    columns: list[list[float | None]] = []
    for ts, values in lines:
        out: list[float | None] = []
        k = -1
        for t in x:
            while k + 1 < len(ts) and ts[k + 1] <= t:
                k += 1
            inside = k >= 0 and t <= ts[-1]
            out.append(_round(values[k]) if inside else None)
        columns.append(out)
    return x, columns


def _round(v: float) -> float:
    return round(v, 4) if math.isfinite(v) else 0.0


def _allocation(run: SavedRun) -> dict[str, Any]:
    curves = [(r.policy, r.allocation_curve) for r in run.reports if r.allocation_curve]
    x = sorted({round(100 * p[0], 4) for _, c in curves for p in c})
    series = []
    for label, curve in curves:
        at = {round(100 * p[0], 4): _round(100 * p[1]) for p in curve}
        series.append({"label": label, "unit": "%", "values": [at.get(v) for v in x]})
    return {
        "x": x,
        "series": series,
        "x_label": "GPUs asked for by arrived jobs",
        "x_unit": "% of fleet",
        "x_per": 1.0,
        "y_label": "% of fleet allocated",
        "stepped": False,
        "note": None,
    }
