"""Saved simulator runs (sim/saved.py): what `corral sim` keeps for the console's page."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from corral.cli.config import CliDeps, CliState
from corral.server.config import ServerOptions
from corral.sim import SimOptions, run
from corral.sim.metrics import Series
from corral.sim.report import SimReport
from corral.sim.saved import (
    MAX_POINTS,
    RUN_NAME,
    BadRun,
    RunCache,
    RunInputs,
    downsample,
    find_run,
    list_runs,
    report_from_dict,
    run_names,
    runs_dir,
    save_run,
)

T0 = 1_796_331_418.0  # a fixed "now": names and order come from it, never from the clock


@pytest.fixture(scope="module")
def small() -> tuple[SimOptions, SimReport]:
    options = SimOptions(gpus=16, max_jobs=30, seed=4)
    return options, run(options)


def test_a_saved_run_reads_back_with_its_figures_and_series(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    path = save_run(tmp_path, RunInputs.of(options), [report], T0)
    assert path.parent == runs_dir(tmp_path) and RUN_NAME.match(path.stem)
    assert path.stem.endswith("-corral-s4")
    assert path.stat().st_mode & 0o777 == 0o600
    assert runs_dir(tmp_path).stat().st_mode & 0o777 == 0o700
    listing = list_runs(tmp_path)
    assert listing.skipped == ()
    [saved] = listing.runs
    assert saved.id == path.stem and saved.saved_at == T0
    assert saved.inputs == RunInputs(format="synthetic", gpus=16, max_jobs=30, seed=4)
    [back] = saved.reports
    assert back.to_dict() == report.to_dict()  # every figure, as `--json` prints them
    assert back.series is not None and report.series is not None
    assert len(back.series) == len(report.series) == saved.points[0]
    assert list(back.series.used) == list(report.series.used)
    assert list(back.series.t) == pytest.approx(list(report.series.t), abs=1e-3)
    assert find_run(tmp_path, saved.id) == saved


def test_a_comparison_is_one_run_with_a_report_per_policy(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, corral = small
    fifo = run(SimOptions(gpus=16, max_jobs=30, seed=4, policy="fifo"))
    path = save_run(tmp_path, RunInputs.of(options), [corral, fifo], T0)
    assert path.stem.endswith("-corral-fifo-s4")
    [saved] = list_runs(tmp_path).runs
    assert [r.policy for r in saved.reports] == ["corral", "fifo"]


def test_only_the_newest_runs_are_kept_and_other_files_are_left_alone(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    folder = runs_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "notes.json").write_text("{}")  # not named as a run: never deleted, never read
    paths = [save_run(tmp_path, RunInputs.of(options), [report], T0 + i, keep=3) for i in range(5)]
    assert run_names(folder) == [p.stem for p in reversed(paths[2:])]  # newest first
    assert not paths[0].exists() and not paths[1].exists()
    assert (folder / "notes.json").exists()
    assert [r.saved_at for r in list_runs(tmp_path).runs] == [T0 + 4, T0 + 3, T0 + 2]


def test_two_runs_in_one_millisecond_keep_both(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    first = save_run(tmp_path, RunInputs.of(options), [report], T0)
    second = save_run(tmp_path, RunInputs.of(options), [report], T0)
    assert first != second and first.exists() and second.exists()
    assert second.stem == first.stem + "-2"


def test_a_write_that_fails_leaves_no_file_and_the_runs_before_it(
    tmp_path: Path, small: tuple[SimOptions, SimReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    options, report = small
    kept = save_run(tmp_path, RunInputs.of(options), [report], T0)

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_run(tmp_path, RunInputs.of(options), [report], T0 + 1)
    # Neither a half-written run nor its temporary file: only the run saved before.
    assert sorted(p.name for p in runs_dir(tmp_path).iterdir()) == [kept.name]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b'{"kind": "something else"}', "not a saved simulation run"),
        (b'{"kind": "corral.sim-run", "version": 99}', "format 99"),
        (b"[1, 2, 3]", "not a saved simulation run"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_corrupt_or_foreign_file_is_skipped_with_a_note(
    tmp_path: Path, small: tuple[SimOptions, SimReport], content: bytes, why: str
) -> None:
    options, report = small
    good = save_run(tmp_path, RunInputs.of(options), [report], T0)
    bad = runs_dir(tmp_path) / "20990101T000000.000Z-corral-s0.json"
    bad.write_bytes(content)
    listing = list_runs(tmp_path)
    assert [r.id for r in listing.runs] == [good.stem]
    [note] = listing.skipped
    assert note.startswith(bad.name) and why in note
    with pytest.raises(BadRun):
        find_run(tmp_path, bad.stem)


def test_a_run_with_a_damaged_figure_or_series_is_refused_by_name(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    path = save_run(tmp_path, RunInputs.of(options), [report], T0)
    doc = json.loads(path.read_text())
    doc["reports"][0]["figures"]["utilization"] = "high"
    path.write_text(json.dumps(doc))
    with pytest.raises(BadRun, match=r"reports\[0\].figures.utilization: expected a number"):
        find_run(tmp_path, path.stem)
    doc["reports"][0]["figures"]["utilization"] = 0.5
    doc["reports"][0]["series"]["used"].pop()
    path.write_text(json.dumps(doc))
    with pytest.raises(BadRun, match="columns of different lengths"):
        find_run(tmp_path, path.stem)
    path.write_text(path.read_text().replace('"saved_at":', '"saved_at":NaN,"x":'))
    with pytest.raises(BadRun, match="not JSON"):
        find_run(tmp_path, path.stem)


def test_a_file_too_large_to_be_a_run_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("corral.sim.saved.MAX_FILE_BYTES", 1024 * 1024)
    folder = runs_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "20990101T000000.000Z-corral-s0.json").write_bytes(b" " * (1024 * 1024 + 10))
    [note] = list_runs(tmp_path).skipped
    assert "over 1 MiB" in note


def test_figures_of_another_version_read_back_where_they_can() -> None:
    figures: dict[str, object] = {
        f: 0 for f in ("nodes", "gpus", "jobs", "completed", "unfinished", "dropped")
    }
    figures |= {"policy": "corral", "seed": 1, "from_the_future": [1, 2]}
    for name in SimReport.__dataclass_fields__:
        if name.endswith("_s") or name in ("utilization", "utilization_makespan", "goodput"):
            figures[name] = 1.5
        if name in ("fragmentation", "fragmented_gpus", "allocated_gpu_hours", "lost_gpu_hours"):
            figures[name] = 0.0
        if name in ("preemptions", "node_failures", "interrupted_attempts", "rounds"):
            figures[name] = 3
    figures["allocated_cost"] = None
    report = report_from_dict(figures, None)
    assert report.rounds == 3 and report.notes == () and report.allocated_cost is None
    del figures["rounds"]
    with pytest.raises(BadRun, match="rounds"):
        report_from_dict(figures, None)


def test_run_ids_are_only_names_listed_from_the_directory(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    save_run(tmp_path, RunInputs.of(options), [report], T0)
    outside = tmp_path / "20990101T000000.000Z-corral-s0.json"  # a run-like file above the folder
    outside.write_text("{}")
    for bad in (
        "../20990101T000000.000Z-corral-s0",
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "",
        "notes",
        "20990101T000000.000Z-corral-s0/../x",
    ):
        assert find_run(tmp_path, bad) is None, bad
        assert not RUN_NAME.match(bad)
    assert find_run(tmp_path / "nowhere", "20990101T000000.000Z-corral-s0") is None


def _series(points: int) -> Series:
    """A step series of `points` samples: busy (6 GPUs) every other second, idle between."""
    s = Series()
    for k in range(points):
        s.add(float(k), 6 * (k % 2), 8, k % 3, k, 0.5)
    return s


def test_downsampling_bounds_the_points_and_keeps_time_averages() -> None:
    long = _series(50_000)
    thin = downsample(long)
    assert len(thin) == MAX_POINTS
    assert thin.t[0] == long.t[0] and thin.t[-1] == long.t[-1] and thin.used[-1] == long.used[-1]
    assert list(thin.t) == sorted(thin.t)
    end = long.t[-1]
    for column in ("used", "up", "queued", "fragmented"):
        exact = long.time_average(getattr(long, column), 0.0, end)
        assert thin.time_average(getattr(thin, column), 0.0, end) == pytest.approx(exact, rel=1e-3)
    short = _series(10)
    assert list(downsample(short).used) == list(short.used)


def test_a_saved_run_of_a_long_series_stays_small(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    long = _series(200_000)
    big = replace(report, series=long)
    path = save_run(tmp_path, RunInputs.of(options), [big], T0)
    assert path.stat().st_size < 400_000
    [saved] = list_runs(tmp_path).runs
    assert saved.points == (200_000,)
    assert saved.reports[0].series is not None and len(saved.reports[0].series) == MAX_POINTS


def test_a_damaged_series_value_is_refused(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    path = save_run(tmp_path, RunInputs.of(options), [report], T0)
    good = path.read_text()
    for damage, why in (('"used":["x"', "expected numbers"), ('"used":[1e999', "finite")):
        path.write_text(re.sub(r'"used":\[[-0-9.e]+', damage, good, count=1))
        with pytest.raises(BadRun, match=why):
            find_run(tmp_path, path.stem)


def test_the_cache_reads_a_file_again_only_when_it_changed(
    tmp_path: Path, small: tuple[SimOptions, SimReport]
) -> None:
    options, report = small
    path = save_run(tmp_path, RunInputs.of(options), [report], T0)
    cache = RunCache()
    first = find_run(tmp_path, path.stem, cache)
    assert first is not None and find_run(tmp_path, path.stem, cache) is first
    path.write_text("{}")
    with pytest.raises(BadRun):
        find_run(tmp_path, path.stem, cache)
    [note] = list_runs(tmp_path, cache).skipped
    assert path.name in note


def test_the_cli_and_the_server_find_one_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`corral sim` (client side: $CORRAL_HOME, else ~/.corral) and the server
    (ServerOptions.home: `--home`, which `corral up` sets to the same, else $CORRAL_HOME)."""
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "h"))
    cli = CliState(CliDeps()).home()
    assert runs_dir(cli) == runs_dir(ServerOptions.from_env().home) == tmp_path / "h" / "sim-runs"
