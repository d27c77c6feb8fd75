"""`corral.sim.run`: options, loading, determinism, reports and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.sim import SimOptions, SyntheticWorkload, format_table, run, synthetic_jobs
from corral.sim.traces import write_philly_csv
from corral.spec.errors import SpecError

SMALL = SyntheticWorkload(jobs=300, load=0.9, preemptible_share=0.3)


def test_same_seed_same_report_with_failures() -> None:
    options = SimOptions(gpus=32, seed=11, failures="llama3", synthetic=SMALL)
    first, second = run(options), run(options)
    assert first == second
    assert first.to_json() == second.to_json()
    other = run(SimOptions(gpus=32, seed=12, failures="llama3", synthetic=SMALL))
    assert other != first


def test_a_philly_csv_replay_reports_every_policy(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    write_philly_csv(synthetic_jobs(SyntheticWorkload(jobs=400), 64, 8, seed=2), path)
    reports = [
        run(SimOptions(trace=path, format="philly-csv", gpus=64, policy=p))
        for p in ("fifo", "fifo-backfill", "corral")
    ]
    for r in reports:
        assert r.completed == r.jobs == 400
        assert 0 < r.utilization <= 1
        assert r.avg_jct_s >= r.avg_queue_s >= 0
        assert r.p99_jct_s >= r.p50_jct_s
        assert r.goodput == 1.0
    # Backfill never makes the mean wait longer than strict FIFO on this workload.
    assert reports[1].avg_queue_s <= reports[0].avg_queue_s
    line = json.loads(reports[2].to_json())
    assert {"avg_jct_s", "p99_jct_s", "avg_queue_s", "utilization"} <= line.keys()
    table = format_table(reports)
    assert "fifo-backfill" in table and "avg JCT (h)" in table


def test_jobs_that_fit_no_node_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-03 12:00:00,60,64,3840,vc\n"
        "2017-10-03 12:00:01,60,1,60,vc\n"
    )
    report = run(SimOptions(trace=path, format="philly-csv", gpus=16, policy="fifo"))
    assert (report.jobs, report.completed) == (1, 1)
    assert any("fit no node" in n for n in report.notes)


def test_an_openb_fill_run_on_a_sample(tmp_path: Path) -> None:
    (tmp_path / "openb_node_list_gpu_node.csv").write_text(
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(f"n{i},32000,131072,4,T4\n" for i in range(4))
    )
    (tmp_path / "openb_pod_list_default.csv").write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time\n"
        "p0,4000,8192,1,500,,LS,Running,0,100,0\n"
        "p1,8000,16384,2,1000,,LS,Running,5,100,5\n"
        "p2,30000,8192,1,1000,,BE,Running,9,100,9\n"
    )
    report = run(SimOptions(trace=tmp_path, format="openb", fill=1.0, seed=3))
    assert report.gpus == 16
    assert report.allocation_at_full is not None
    assert 0 < report.allocation_at_full <= 1
    assert report.allocation_curve[-1][0] == 1.0
    assert report.dropped + report.unfinished == report.jobs


def test_options_errors_name_each_option() -> None:
    with pytest.raises(SpecError) as info:
        run(SimOptions(format="philly-csv", gpus=8, cluster=Path("c.yaml"), max_jobs=0))
    paths = [e.path for e in info.value.errors]
    assert paths == ["trace", "gpus", "max_jobs"]


def test_a_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "sim.png"
    run(SimOptions(gpus=16, synthetic=SyntheticWorkload(jobs=50), plot=out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_public_api() -> None:
    import corral.sim

    assert {"run", "SimOptions", "SimReport", "format_table", "POLICIES"} <= set(corral.sim.__all__)
    assert all(hasattr(corral.sim, name) for name in corral.sim.__all__)
    assert callable(corral.sim.run)
