"""Cost of a bursty day: corral's fleet autoscaler against fixed pools sized for the peak.

The simulator (`corral sim --pools`, corral.sim.supply) runs a research team's day
(corral.sim.workload.BurstyDay: bursts of submissions at 09:00, 13:30 and 18:00 and a
trickle all day; H100 jobs of 1 to 16 GPUs, ~45 min each, 30% preemptible) on two clouds
with different prices, from the catalog's `sim` provider: sim-b sells H100 nodes at
$72/h ($35 spot), sim-a at $98/h ($40 spot); at most 12 + 12 on-demand and 4 + 4 spot
nodes (the quota).

- corral: the pools start empty; core.pools.decide, after each scheduler round, buys the
  cheapest nodes that let the waiting gangs place (spot first for preemptible work, and
  only for it: non-preemptible jobs stay off spot nodes on both sides), they join
  `--boot-s` later, and go back after `--idle-s` idle. The headline uses the product's
  defaults (idle 600 s, no warm spares: the server's NodePoolSpec defaults).
- fixed_pools (baseline, same jobs, same scheduler): every pool at its max all day, the
  peak the autoscaler may reach.

Cost is node-hours x price (nodes billed from launch to release; the fixed ones all day),
until the end of the day or of the last job. Headline: the median over the seeds of
corral's cost; `ratio` = corral's / fixed pools' (target <= 0.7). Queueing delay (first
start - submit, mean over jobs) for both in `extra` (target: corral's <= 1.2x).

`extra.warm_spares`: the same day with an operator's latency setting, `--spares` whole
nodes kept idle ahead of demand in each on-demand pool (PoolFacts.spare_nodes): the
autoscaler's extra delay is the boot of the nodes it buys when a burst starts, and only
capacity bought ahead of demand removes it. `extra.sweep` (with `--sweep`): the table of
idle grace x warm spares (cost ratio, delay ratio).

`extra.oversubscribed` runs the same comparison on a day whose bursts are twice as large
(80 jobs: more than the quota holds at once, so both queue); `extra.boot_sensitivity` the
delay ratio at other boot times: the autoscaler's delay is mostly the boot time of the
nodes it buys when a burst starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from corral.sim import SimOptions, SimReport, run
from corral.sim.workload import BurstyDay

DAY_S = 86400.0
SWEEP_IDLE_S = (600.0, 1800.0, 3600.0)
SWEEP_SPARES = (0, 1, 2, 3, 4)


def pools_file(boot_s: float, idle_s: float, spares: int = 0) -> dict[str, Any]:
    def pool(name: str, region: str, spot: bool, most: int) -> dict[str, Any]:
        return {
            "name": name,
            "type": "h100x8",
            "region": region,
            "spot": spot,
            "max": most,
            "idle_after": idle_s,
            "spare": 0 if spot else spares,
        }

    return {
        "boot": boot_s,
        "pools": [
            pool("b-h100", "sim-b", False, 12),
            pool("a-h100", "sim-a", False, 12),
            pool("b-h100-spot", "sim-b", True, 4),
            pool("a-h100-spot", "sim-a", True, 4),
        ],
    }


def compare(
    day: BurstyDay, seeds: list[int], boot_s: float, idle_s: float, workdir: Path, spares: int = 0
) -> dict[str, Any]:
    path = workdir / f"pools-{boot_s:g}-{idle_s:g}-{spares}.yaml"
    path.write_text(json.dumps(pools_file(boot_s, idle_s, spares)))
    ours: list[SimReport] = []
    fixed: list[SimReport] = []
    for seed in seeds:
        options = SimOptions(format="bursty", pools=path, bill_until_s=DAY_S, seed=seed, bursty=day)
        ours.append(run(options))
        fixed.append(run(replace(options, fixed_pools=True)))
    cost = statistics.median(r.node_cost or 0.0 for r in ours)
    fixed_cost = statistics.median(r.node_cost or 0.0 for r in fixed)
    delay = statistics.median(r.avg_queue_s for r in ours)
    fixed_delay = statistics.median(r.avg_queue_s for r in fixed)
    return {
        "cost": round(cost, 2),
        "fixed_pools_cost": round(fixed_cost, 2),
        "cost_ratio": round(cost / fixed_cost, 3),
        "avg_queue_delay_s": {"corral": round(delay, 1), "fixed_pools": round(fixed_delay, 1)},
        "delay_ratio": round(delay / fixed_delay, 3) if fixed_delay else None,
        "node_hours": {
            "corral": round(statistics.median(r.node_hours or 0.0 for r in ours), 1),
            "fixed_pools": round(statistics.median(r.node_hours or 0.0 for r in fixed), 1),
        },
        "pool_node_hours_seed1": {k: round(v, 1) for k, v in ours[0].pool_node_hours.items()},
        "jobs": ours[0].jobs,
        "unfinished": sum(r.unfinished for r in ours + fixed),
        "preemptions": {
            "corral": statistics.median(r.preemptions for r in ours),
            "fixed_pools": statistics.median(r.preemptions for r in fixed),
        },
        "per_seed": [
            {
                "seed": s,
                "cost_ratio": round((a.node_cost or 0.0) / (f.node_cost or 1.0), 3),
                "delay_s": [round(a.avg_queue_s, 1), round(f.avg_queue_s, 1)],
            }
            for s, a, f in zip(seeds, ours, fixed, strict=True)
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--boot-s", type=float, default=120.0)
    p.add_argument("--idle-s", type=float, default=600.0)
    p.add_argument("--burst-jobs", type=int, default=40)
    p.add_argument("--spares", type=int, default=3, help="warm spares per on-demand pool")
    p.add_argument("--sweep", action="store_true", help="add the idle x spares table")
    args = p.parse_args()
    seeds = list(range(1, args.seeds + 1))
    day = BurstyDay(burst_jobs=args.burst_jobs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        main_run = compare(day, seeds, args.boot_s, args.idle_s, work)
        over = compare(
            replace(day, burst_jobs=2 * day.burst_jobs), seeds, args.boot_s, args.idle_s, work
        )
        warm = compare(day, seeds, args.boot_s, args.idle_s, work, args.spares)
        sweep = []
        for idle in SWEEP_IDLE_S if args.sweep else ():
            for spares in SWEEP_SPARES:
                row = compare(day, seeds, args.boot_s, idle, work, spares)
                sweep.append(
                    {
                        "idle_after_s": idle,
                        "spares_per_on_demand_pool": spares,
                        "cost_ratio": row["cost_ratio"],
                        "delay_ratio": row["delay_ratio"],
                    }
                )
        boots = {
            f"{boot:g}s": compare(day, seeds, boot, args.idle_s, work)["delay_ratio"]
            for boot in (30.0, 60.0, 300.0)
        }
    elapsed = time.perf_counter() - started
    ratio = main_run["cost_ratio"]
    delay_ratio = main_run["delay_ratio"]
    print(
        json.dumps(
            {
                "bench": "autoscale_cost",
                "metric": "cost",
                "value": main_run["cost"],
                "unit": "USD",
                "higher_is_better": False,
                "baseline": "fixed_pools",
                "baseline_value": main_run["fixed_pools_cost"],
                "ratio": ratio,
                "extra": {
                    "avg_queue_delay_s": main_run["avg_queue_delay_s"],
                    "delay_ratio": delay_ratio,
                    "targets": {
                        "cost_ratio_le_0.7": ratio <= 0.7,
                        "delay_ratio_le_1.2": delay_ratio is not None and delay_ratio <= 1.2,
                    },
                    "day": main_run,
                    "warm_spares": {
                        "spares_per_on_demand_pool": args.spares,
                        "cost_ratio": warm["cost_ratio"],
                        "delay_ratio": warm["delay_ratio"],
                        "avg_queue_delay_s": warm["avg_queue_delay_s"],
                    },
                    "sweep": sweep,
                    "oversubscribed": over,
                    "boot_sensitivity_delay_ratio": boots,
                    "wall_s": round(elapsed, 1),
                },
                "conditions": {
                    "seeds": seeds,
                    "repetitions": len(seeds),
                    "statistic": "median over seeds",
                    "boot_s": args.boot_s,
                    "idle_after_s": args.idle_s,
                    "burst_jobs": day.burst_jobs,
                    "bursts_at_h": list(day.bursts_at_h),
                    "trickle_per_h": day.trickle_per_h,
                    "pools": pools_file(args.boot_s, args.idle_s)["pools"],
                    "billed_until_h": "max(24, end of the last job)",
                    "policy": "corral (the server's scheduler), fleet autoscaler core.pools",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
