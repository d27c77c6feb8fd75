"""Scheduling quality: corral's scheduler against FIFO + first fit and FIFO + EASY backfill.

Each workload is replayed with all three policies in the same run, in the simulator
(`corral.sim`), which runs the very `corral.core.scheduler.Scheduler` the server runs.

1. OpenB — the Alibaba 2023 GPU trace in ../shared/traces/openb/ on its own 1,213 nodes
   (6,212 GPUs), as in the FGD paper: tasks drawn from the trace (seeded) arrive and never
   leave until their GPU demand reaches 1.2x capacity; a task that does not fit on arrival
   is counted unallocated. Reported: the GPU allocation rate (allocated / capacity) when
   arrived demand reaches 100% of capacity, the curve at each 10%, and the FGD-style
   fragmentation (share of free GPUs the trace's typical task shapes cannot use) at 90%
   (at 100% the few GPUs left free are fragmented for every policy).
   Fractional-GPU tasks are rounded up to one whole GPU (corral allocates whole devices).
2. Philly — a Philly-format job list (`timestamp,duration,num_gpus,gpu_time,cluster`;
   the data is not shipped, so it is generated with fixed seeds: 4,000 jobs, Poisson
   arrivals at an offered load of 1.0, lognormal run times capped at a day, a Philly-like
   GPU-count mix up to 64) replayed on 512 GPUs (64 nodes x 8). Reported: mean and p99 job
   completion time, mean queueing delay, utilization while jobs arrive, preemptions —
   the median over SEEDS workloads.

Headline: corral's mean JCT / FIFO's (`ratio`); `backfill_ratio` is corral's / EASY's.
Exact runtime estimates are given to the schedulers (the backfill-friendly case).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from corral.sim import (
    PolicyName,
    SimOptions,
    SimReport,
    SyntheticWorkload,
    format_table,
    run,
    synthetic_jobs,
)
from corral.sim.traces import write_philly_csv

POLICIES: tuple[PolicyName, ...] = ("fifo", "fifo-backfill", "corral")
OPENB = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb"
OPENB_SEED = 1
FILL = 1.2
PHILLY_GPUS = 512
SEEDS = (1, 2, 3)
PHILLY = SyntheticWorkload(jobs=4000, load=1.0, max_duration_s=86400.0)


def _timed(options: SimOptions) -> tuple[SimReport, float]:
    start = time.perf_counter()
    report = run(options)
    return report, time.perf_counter() - start


def openb() -> dict[str, SimReport]:
    reports: dict[str, SimReport] = {}
    for policy in POLICIES:
        options = SimOptions(
            trace=OPENB,
            format="openb",
            policy=policy,
            seed=OPENB_SEED,
            fill=FILL,
        )
        reports[policy], wall = _timed(options)
        print(f"openb {policy}: {wall:.1f}s", file=sys.stderr, flush=True)
    return reports


def philly(workdir: Path) -> dict[str, list[SimReport]]:
    reports: dict[str, list[SimReport]] = {p: [] for p in POLICIES}
    for seed in SEEDS:
        path = workdir / f"philly-{seed}.csv"
        # Gangs are shaped for 8-GPU nodes by the loader, as for any Philly trace.
        write_philly_csv(synthetic_jobs(PHILLY, PHILLY_GPUS, 8, seed=seed), path)
        for policy in POLICIES:
            options = SimOptions(
                trace=path,
                format="philly-csv",
                gpus=PHILLY_GPUS,
                policy=policy,
                seed=seed,
            )
            report, wall = _timed(options)
            reports[policy].append(report)
            print(f"philly seed {seed} {policy}: {wall:.1f}s", file=sys.stderr, flush=True)
    return reports


def _median(reports: list[SimReport], field: str) -> float:
    return float(statistics.median(float(getattr(r, field)) for r in reports))


def _fragmentation_at(report: SimReport, arrived: float) -> float | None:
    """The fragmented share of free GPUs when arrived demand reached `arrived` x capacity."""
    for point in report.allocation_curve:
        if abs(point[0] - arrived) < 1e-9:
            return round(point[2], 4)
    return None


def main() -> None:
    started = time.perf_counter()
    fill = openb() if OPENB.is_dir() else {}
    with tempfile.TemporaryDirectory(prefix="corral-sched-quality-") as tmp:
        runs = philly(Path(tmp))
    if fill:
        print("== OpenB fill on its 1,213 nodes")
        print(format_table([fill[p] for p in POLICIES]))
    print(f"== Philly-format, {PHILLY.jobs} jobs on {PHILLY_GPUS} GPUs, seed {SEEDS[0]}")
    print(format_table([runs[p][0] for p in POLICIES]))

    jct = {p: _median(runs[p], "avg_jct_s") for p in POLICIES}
    extra: dict[str, object] = {
        "fifo_backfill_avg_jct_s": round(jct["fifo-backfill"], 1),
        "backfill_ratio": round(jct["corral"] / jct["fifo-backfill"], 4),
    }
    for policy in POLICIES:
        key = policy.replace("-", "_")
        extra[f"{key}_avg_jct_s"] = round(jct[policy], 1)
        extra[f"{key}_p99_jct_s"] = round(_median(runs[policy], "p99_jct_s"), 1)
        extra[f"{key}_avg_queue_s"] = round(_median(runs[policy], "avg_queue_s"), 1)
        extra[f"{key}_utilization"] = round(_median(runs[policy], "utilization"), 4)
        extra[f"{key}_preemptions"] = _median(runs[policy], "preemptions")
        if fill:
            rate = fill[policy].allocation_at_full
            extra[f"{key}_openb_allocation_rate"] = None if rate is None else round(rate, 4)
            extra[f"{key}_openb_fragmentation"] = _fragmentation_at(fill[policy], 0.9)
    extra["utilization"] = extra["corral_utilization"]
    extra["avg_queue_s"] = extra["corral_avg_queue_s"]
    extra["p99_jct_s"] = extra["corral_p99_jct_s"]
    extra["preemptions"] = extra["corral_preemptions"]
    if fill:
        extra["openb_allocation_rate"] = extra["corral_openb_allocation_rate"]
        extra["openb_fragmentation"] = _fragmentation_at(fill["corral"], 0.9)
        extra["openb_curve_arrived_allocated_fragmented"] = [
            [round(x, 4) for x in p] for p in fill["corral"].allocation_curve
        ]
    line = {
        "bench": "sched_quality",
        "metric": "avg_jct_s",
        "value": round(jct["corral"], 1),
        "unit": "s",
        "higher_is_better": False,
        "baseline": "fifo_first_fit",
        "baseline_value": round(jct["fifo"], 1),
        "ratio": round(jct["corral"] / jct["fifo"], 4),
        "extra": extra,
        "conditions": {
            "philly_jobs": PHILLY.jobs,
            "philly_gpus": PHILLY_GPUS,
            "philly_nodes": PHILLY_GPUS // 8,
            "philly_offered_load": PHILLY.load,
            "philly_max_duration_s": PHILLY.max_duration_s,
            "philly_seeds": list(SEEDS),
            "repetitions": len(SEEDS),
            "aggregate": "median over seeds",
            "runtime_estimates": "exact",
            "openb_trace": "openb_pod_list_default.csv" if fill else "missing",
            "openb_nodes": fill["corral"].nodes if fill else None,
            "openb_gpus": fill["corral"].gpus if fill else None,
            "openb_fill": FILL,
            "openb_seed": OPENB_SEED,
            "openb_fractional_gpus": "rounded up to whole GPUs",
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
