"""What confinement costs a replica's start: start -> running and start -> exited for `true`,
confined (per-workspace uid, PID and mount namespaces, agent/sandbox) against unconfined,
side by side through the agent's own Runner, alternating so both see the same load.

Needs root (confinement does); elsewhere it prints `"skipped"` and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from corral.agent.runner import Runner

RUNS = 30
WARMUP = 3


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def _p99_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)


# When each replica was first reported (running, or exited if it never was seen running).
FIRST_CHANGE: dict[str, float] = {}


def _changed(rid: str) -> None:
    FIRST_CHANGE.setdefault(rid, time.perf_counter())


async def _one(runner: Runner, rid: str, workspace: str) -> tuple[float, float]:
    from corral.wire.agent import ReplicaAssignment

    assignment = ReplicaAssignment(
        replica_id=rid,
        job="bench",
        workspace=workspace,
        attempt=1,
        rank=0,
        argv=["true"],
        env={},
        uid_index=1,
    )
    started = time.perf_counter()
    runner.start(assignment)
    record = runner.records[rid]
    await record.done.wait()
    ended = time.perf_counter()
    assert record.exit_code == 0, (record.path / "output.log").read_text()
    return FIRST_CHANGE.get(rid, ended) - started, ended - started


async def _run(root: Path) -> dict[str, dict[str, list[float]]]:
    from corral.agent.sandbox.policy import Isolation

    confined = Isolation(state_dir=root / "confined")
    runners = {
        "unconfined": Runner(root / "plain", on_change=_changed),
        "confined": Runner(root / "confined", on_change=_changed, isolation=confined),
    }
    for runner in runners.values():
        runner.load()
    times: dict[str, dict[str, list[float]]] = {
        mode: {"running": [], "exited": []} for mode in runners
    }
    for i in range(WARMUP + RUNS):
        for mode, runner in runners.items():
            to_running, to_exit = await _one(runner, f"{mode}-{i}", "bench")
            if i >= WARMUP:
                times[mode]["running"].append(to_running)
                times[mode]["exited"].append(to_exit)
    return times


def main() -> None:
    if os.geteuid() != 0:
        print(json.dumps({"bench": "replica_start", "skipped": "confinement needs root"}))
        return
    root = Path(tempfile.mkdtemp(prefix="corral-bench-start-"))
    os.chmod(root, 0o700)
    times = asyncio.run(_run(root))
    confined = _median_ms(times["confined"]["exited"])
    plain = _median_ms(times["unconfined"]["exited"])
    print(
        json.dumps(
            {
                "bench": "replica_start",
                "metric": "confined_start_to_exit_ms",
                "value": confined,
                "unit": "ms",
                "higher_is_better": False,
                "baseline": "unconfined",
                "baseline_value": plain,
                "ratio": round(confined / plain, 2),
                "extra": {
                    "confined_start_to_running_ms": _median_ms(times["confined"]["running"]),
                    "unconfined_start_to_running_ms": _median_ms(times["unconfined"]["running"]),
                    "confined_start_to_exit_p99_ms": _p99_ms(times["confined"]["exited"]),
                    "unconfined_start_to_exit_p99_ms": _p99_ms(times["unconfined"]["exited"]),
                },
                "conditions": {
                    "runs": RUNS,
                    "warmup": WARMUP,
                    "workload": "true",
                    "python": sys.version.split()[0],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
