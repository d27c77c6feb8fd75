"""Environment cache: how soon a replica's workload starts when its Python environment is
already built on the node (the second replica, the next job), against building it cold.

Run from the repository root:  .venv/bin/python bench/env_cache.py

Each measurement starts the wrapper the shim starts (`python -I -m corral.agent.envbuild
<plan> -- python -c "import …; print(…)"`, corral/agent/envbuild.py) and stops at the
workload's first line, read from its stdout: the environment is built or found, and the
workload's Python has started in it and imported every package.

- cold: a fresh HOME each time (no environment, an empty uv cache), so uv resolves,
  downloads and installs from the index: the first replica on a new node.
- cold, uv cache warm: a new environment (other inputs) in a HOME whose uv cache has the
  wheels: the next job with a changed requirement.
- warm (the headline): the environment exists: the second replica, the next job.
- bare: the same workload without the wrapper, in the built environment: what the warm
  start would cost with no cache lookup at all (the wrapper's own overhead is the gap).

Packages come from a local `file://` PEP 503 index of tiny wheels (tests/support/wheels.py),
so nothing leaves the machine and the figures measure corral and uv, not a network.
Progress goes to stderr; the last line on stdout is the JSON result (see BENCH.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uv

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from corral.agent.envbuild import wrap_argv  # noqa: E402
from support.wheels import Package, index_url, write_index  # noqa: E402

MARK = "WORKLOAD-READY"
TARGET_S = 0.5


def _packages(count: int) -> list[Package]:
    # A chain pkg0 -> pkg1 -> … so that uv resolves dependencies, not just a flat list.
    return [
        Package(f"pkg{i}", "1.0", requires=(f"pkg{i + 1}>=1",) if i + 1 < count else ())
        for i in range(count)
    ]


def _workload(count: int) -> list[str]:
    imports = ", ".join(f"pkg{i}" for i in range(count))
    return ["python", "-c", f"import {imports}; print({MARK!r}, flush=True)"]


def _env(home: Path, status: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "CORRAL_", "XDG_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        HOME=str(home),
        CORRAL_PROGRESS_FILE=str(status / "progress.json"),
        UV_PYTHON_DOWNLOADS="never",
    )
    return env


def _time_to_first_line(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from starting argv to the workload's first line (MARK) on its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    ready: float | None = None
    for line in proc.stdout:
        if line.startswith(MARK):
            ready = time.perf_counter() - started
        else:
            seen.append(line)
    if proc.wait() != 0 or ready is None:
        raise RuntimeError(f"the workload did not start ({proc.returncode}): {''.join(seen)}")
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=8, help="tiny wheels in a chain")
    parser.add_argument("--cold-reps", type=int, default=3)
    parser.add_argument("--warm-reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="corral-bench-env-"))
    try:
        write_index(root / "index", _packages(args.packages))
        index = index_url(root / "index")
        work = root / "work"
        status = root / "status"
        work.mkdir()
        status.mkdir()
        requirements = ["pkg0"]
        workload = _workload(args.packages)
        assignment = {"environment": {"requirements": requirements}}
        argv = wrap_argv(assignment, workload, index)

        cold: list[float] = []
        for rep in range(args.cold_reps):
            home = root / f"home-cold-{rep}"
            home.mkdir()
            cold.append(_time_to_first_line(argv, work, _env(home, status)))
            print(f"cold {rep}: {cold[-1]:.3f} s", file=sys.stderr)

        # One HOME from here on: its environment built by the last cold run.
        home = root / f"home-cold-{args.cold_reps - 1}"
        env = _env(home, status)
        cold_cache_warm: list[float] = []
        for rep in range(args.cold_reps):
            # Another environment (the same packages, another key) from uv's warm cache.
            other = {"environment": {"requirements": [*requirements, f"# variant {rep}"]}}
            seconds = _time_to_first_line(wrap_argv(other, workload, index), work, env)
            cold_cache_warm.append(seconds)
            print(f"cold, uv cache warm {rep}: {seconds:.3f} s", file=sys.stderr)

        warm: list[float] = []
        for rep in range(args.warmup + args.warm_reps):
            seconds = _time_to_first_line(argv, work, env)
            if rep >= args.warmup:
                warm.append(seconds)
        print(f"warm: median {statistics.median(warm):.3f} s", file=sys.stderr)

        (env_dir,) = [
            p
            for p in (home / ".cache" / "corral" / "envs").iterdir()
            if p.is_dir() and (p / ".corral-requirements.txt").read_text() == "pkg0\n"
        ]
        bare_env = dict(env, VIRTUAL_ENV=str(env_dir), PATH=f"{env_dir}/bin:{env['PATH']}")
        bare: list[float] = []
        for rep in range(args.warmup + args.warm_reps):
            seconds = _time_to_first_line(workload, work, bare_env)
            if rep >= args.warmup:
                bare.append(seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    value = statistics.median(warm)
    baseline = statistics.median(cold)
    uv_version = subprocess.run(
        [uv.find_uv_bin(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        json.dumps(
            {
                "bench": "env_cache",
                "metric": "warm_env_ready_s",
                "value": round(value, 4),
                "unit": "s",
                "higher_is_better": False,
                "baseline": "cold_build",
                "baseline_value": round(baseline, 4),
                "ratio": round(value / baseline, 3),
                "extra": {
                    "target_s": TARGET_S,
                    "meets_target": value <= TARGET_S,
                    "warm_env_ready_max_s": round(max(warm), 4),
                    "cold_uv_cache_warm_s": round(statistics.median(cold_cache_warm), 4),
                    "bare_workload_s": round(statistics.median(bare), 4),
                    "wrapper_overhead_s": round(value - statistics.median(bare), 4),
                    "speedup": round(baseline / value, 1),
                },
                "conditions": {
                    "packages": args.packages,
                    "index": "local file:// PEP 503 index of tiny pure-Python wheels",
                    "cold_reps": args.cold_reps,
                    "warm_reps": args.warm_reps,
                    "warmup": args.warmup,
                    "uv": uv_version,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "measured": "wrapper start to the workload's first stdout line",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
