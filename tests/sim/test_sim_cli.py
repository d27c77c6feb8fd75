"""`corral sim` as a user runs it: a Philly-format trace from a path, JSON out, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from corral.sim import SyntheticWorkload, synthetic_jobs
from corral.sim.traces import write_philly_csv


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sim_replays_a_philly_trace_per_policy_as_json_lines_and_is_deterministic(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "philly.csv"
    write_philly_csv(synthetic_jobs(SyntheticWorkload(jobs=200), 64, 8, seed=3), trace)
    args = ["sim", "--trace", str(trace), "--format", "philly-csv", "--gpus", "64", "--json"]
    first = corral(*args, "--policy", "corral", "--policy", "fifo")
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["policy"] for r in lines] == ["corral", "fifo"]
    for report in lines:
        assert {"avg_jct_s", "p99_jct_s", "avg_queue_s", "utilization"} <= set(report)
        assert report["jobs"] == 200
    again = corral(*args, "--policy", "corral")
    assert json.loads(again.stdout) == lines[0]


def test_sim_plots_a_png_and_prints_a_table(tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    result = corral("sim", "--gpus", "32", "--max-jobs", "60", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert "avg JCT" in result.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_bad_input_is_one_line_naming_the_option(tmp_path: Path) -> None:
    missing = corral("sim", "--trace", str(tmp_path / "nope.csv"), "--format", "philly-csv")
    assert missing.returncode == 2 and "--trace" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    no_gpus = corral("sim", "--trace", str(tmp_path), "--format", "philly-csv")
    assert no_gpus.returncode == 2 and "--gpus" in no_gpus.stderr
    policy = corral("sim", "--policy", "lifo")
    assert policy.returncode == 2 and "--policy 'lifo'" in policy.stderr
