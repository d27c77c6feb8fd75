"""The Simulation page: runs `corral sim` saved under the home the server uses, listed and
drawn as `corral sim --plot` draws them."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.sim import SyntheticWorkload, synthetic_jobs
from corral.sim.metrics import Series
from corral.sim.saved import RunInputs, SavedRun, list_runs, report_from_dict, runs_dir
from corral.sim.traces import write_philly_csv
from corral.web.views.sim import merge_steps, time_unit
from support.app import ADMIN_TOKEN
from support.console import log_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The figures a report must have (the rest take their defaults).
FIGURES = {
    **{name: 0 for name in ("seed", "nodes", "gpus", "jobs", "completed", "unfinished")},
    **{name: 0 for name in ("dropped", "preemptions", "node_failures", "interrupted_attempts")},
    **{name: 0.0 for name in ("avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_queue_s")},
    **{name: 0.0 for name in ("p50_queue_s", "p99_queue_s", "utilization", "fragmentation")},
    **{name: 0.0 for name in ("utilization_makespan", "fragmented_gpus", "goodput")},
    **{name: 0.0 for name in ("allocated_gpu_hours", "lost_gpu_hours", "makespan_s")},
    "policy": "corral",
    "allocated_cost": None,
    "rounds": 0,
}


def home_of(server: TestClient) -> Path:
    home: Path = server.app.state.cp.options.home  # type: ignore[attr-defined]
    return home


def corral_sim(home: Path, *args: str) -> str:
    """`corral sim ARGS` as a user runs it, with CORRAL_HOME set as `corral up` would; the
    CLI finds its home from the environment (CliDeps has none of its own)."""
    env = {"CORRAL_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    result = CliRunner().invoke(build_app(CliDeps()), ["sim", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def series_urls(page: str) -> dict[str, str]:
    found = re.findall(r'data-series="([^"]+\?panel=(\w+))"', page)
    return {panel: url.replace("&amp;", "&") for url, panel in found}


def test_no_runs_yet_says_how_to_make_one(admin: TestClient) -> None:
    page = admin.get("/ui/sim")
    assert page.status_code == 200
    assert 'data-testid="sim-empty"' in page.text and "corral sim --gpus 64" in page.text
    assert str(runs_dir(home_of(admin))) in page.text  # a cluster admin sees where


def test_a_saved_comparison_is_listed_and_its_panels_drawn(admin: TestClient) -> None:
    home = home_of(admin)
    corral_sim(
        home, "--gpus", "16", "--max-jobs", "40", "--seed", "3", "-p", "corral", "-p", "fifo"
    )
    [run] = list_runs(home).runs
    page = admin.get("/ui/sim")
    assert page.status_code == 200
    rows = re.findall(r'data-testid="sim-row"', page.text)
    assert len(rows) == 2  # one row per policy, under one run
    assert f'href="/ui/sim/{run.id}"' in page.text
    assert "corral" in page.text and "fifo" in page.text and "synthetic" in page.text
    assert 'data-testid="sim-table"' in page.text and "avg JCT (h)" in page.text
    urls = series_urls(page.text)
    assert set(urls) == {"utilization", "queue", "fragmentation"}  # not a fill run
    assert all(u.startswith(f"/ui/sim/{run.id}/series") for u in urls.values())

    util = admin.get(urls["utilization"])
    assert util.status_code == 200 and util.headers["content-type"] == "application/json"
    data = util.json()
    assert [s["label"] for s in data["series"]] == ["corral", "fifo"]
    assert data["x"] == sorted(data["x"]) and data["x"][0] >= 0 and len(data["x"]) > 10
    assert data["x_unit"] == "h" and data["x_per"] == 3600 and data["stepped"] is True
    for s, report in zip(data["series"], run.reports, strict=True):
        assert s["unit"] == "%" and len(s["values"]) == len(data["x"])
        values = [v for v in s["values"] if v is not None]
        # The panel's peak is the report's peak allocation, in % of the fleet.
        assert max(values) == 100 * report.peak_used_gpus / report.gpus
    queue = admin.get(urls["queue"]).json()
    assert queue["y_label"] == "GPUs"
    assert max(v for v in queue["series"][1]["values"] if v is not None) > 0  # fifo queued
    frag = admin.get(urls["fragmentation"]).json()
    assert all(0 <= v <= 100 for s in frag["series"] for v in s["values"] if v is not None)


def test_a_run_has_its_own_page_and_a_fill_run_its_allocation_curve(admin: TestClient) -> None:
    home = home_of(admin)
    corral_sim(home, "--gpus", "16", "--max-jobs", "30")
    corral_sim(home, "--gpus", "16", "--fill", "1.0", "--max-jobs", "60", "-p", "fifo")
    older, newer = sorted(list_runs(home).runs, key=lambda r: r.saved_at)
    page = admin.get(f"/ui/sim/{older.id}")
    assert page.status_code == 200
    assert f'data-run="{older.id}"' in page.text and "allocation" not in series_urls(page.text)
    assert re.search(rf'class="selected run-first" data-run="{older.id}"', page.text)
    fill = admin.get(f"/ui/sim/{newer.id}")
    urls = series_urls(fill.text)
    assert "allocation" in urls
    curve = admin.get(urls["allocation"]).json()
    assert curve["x"][:3] == [10.0, 20.0, 30.0] and curve["x_unit"] == "% of fleet"
    assert curve["series"][0]["label"] == "fifo" and curve["stepped"] is False


def test_run_ids_are_names_listed_from_the_directory_nothing_else(admin: TestClient) -> None:
    home = home_of(admin)
    corral_sim(home, "--gpus", "16", "--max-jobs", "20")
    [run] = list_runs(home).runs
    (runs_dir(home) / "notes.json").write_text('{"kind": "corral.sim-run"}')
    (home / f"{run.id}.json").write_bytes((runs_dir(home) / f"{run.id}.json").read_bytes())
    for bad in (
        "..%2F..%2Fetc%2Fpasswd",
        f"..%2F{run.id}",
        "notes",
        "%2E%2E",  # a plain ".." the client itself resolves before sending
        f"{run.id}.json",
    ):
        for url in (f"/ui/sim/{bad}", f"/ui/sim/{bad}/series?panel=utilization"):
            answer = admin.get(url)
            assert answer.status_code == 404, (url, answer.status_code)
            assert "root:" not in answer.text
    assert admin.get(f"/ui/sim/{run.id}/series?panel=utilization").status_code == 200
    wrong = admin.get(f"/ui/sim/{run.id}/series?panel=../../etc/passwd")
    assert wrong.status_code == 422 and "panel: expected one of" in wrong.text


def test_a_corrupt_run_is_skipped_with_a_note_and_the_page_still_shows(
    admin: TestClient,
) -> None:
    home = home_of(admin)
    corral_sim(home, "--gpus", "16", "--max-jobs", "20")
    broken = runs_dir(home) / "20990101T000000.000Z-corral-s0.json"
    broken.write_text('{"kind": "corral.sim-run", "version": 1, "saved_at": ')
    page = admin.get("/ui/sim")
    assert page.status_code == 200
    assert 'data-testid="sim-skipped"' in page.text and broken.name in page.text
    assert len(re.findall('data-testid="sim-row"', page.text)) == 1
    answer = admin.get(f"/ui/sim/{broken.stem}")
    assert answer.status_code == 404 and "cannot be read" in answer.text
    series = admin.get(f"/ui/sim/{broken.stem}/series?panel=queue")
    assert series.status_code == 404 and "not JSON" in series.text


def test_any_viewer_sees_runs_but_only_an_admin_sees_the_operator_paths(
    server: TestClient, tmp_path: Path
) -> None:
    trace = tmp_path / "operator-only" / "philly.csv"
    trace.parent.mkdir()
    write_philly_csv(synthetic_jobs(SyntheticWorkload(jobs=30), 16, 8, seed=1), trace)
    corral_sim(home_of(server), "--trace", str(trace), "--format", "philly-csv", "--gpus", "16")
    made = server.post("/v1/tokens", json={"role": "viewer", "workspace": "default"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    log_in(server, made.json()["token"])
    page = server.get("/ui/sim")
    assert page.status_code == 200 and 'data-testid="sim-row"' in page.text
    assert "philly-csv: philly.csv" in page.text and "operator-only" not in page.text
    assert str(home_of(server)) not in page.text and "$CORRAL_HOME/sim-runs" in page.text
    url = series_urls(page.text)["utilization"]
    assert server.get(url).status_code == 200
    log_in(server)
    assert str(trace) in server.get("/ui/sim").text


def test_without_a_session_the_series_route_asks_to_log_in(server: TestClient) -> None:
    answer = server.get("/ui/sim/x/series?panel=queue", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_no_save_keeps_nothing(server: TestClient) -> None:
    corral_sim(home_of(server), "--gpus", "16", "--max-jobs", "20", "--no-save", "--json")
    assert list_runs(home_of(server)).runs == ()


def test_step_lines_sampled_at_different_instants_share_one_axis() -> None:
    x, (a, b) = merge_steps([([0.0, 10.0, 30.0], [1.0, 2.0, 3.0]), ([5.0, 20.0], [7.0, 8.0])])
    assert x == [0.0, 5.0, 10.0, 20.0, 30.0]
    assert a == [1.0, 1.0, 2.0, 2.0, 3.0]  # each value holds until the next sample
    assert b == [None, 7.0, 7.0, 8.0, None]  # nothing before its first sample or after its last


def test_simulated_time_reads_in_the_unit_that_fits() -> None:
    def lasting(seconds: float) -> SavedRun:
        s = Series()
        s.add(0.0, 0, 8, 0, 0, 0.0)
        s.add(seconds, 0, 8, 0, 0, 0.0)
        report = report_from_dict(FIGURES, s)
        return SavedRun("r", 0.0, RunInputs(format="synthetic"), (report,), (2,))

    assert time_unit(lasting(60)) == ("s", 1.0)
    assert time_unit(lasting(1800)) == ("min", 60.0)
    assert time_unit(lasting(40 * 3600)) == ("h", 3600.0)
    assert time_unit(lasting(149 * 86400)) == ("days", 86400.0)
