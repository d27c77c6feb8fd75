"""What a run tells its reader: pinned numbers on an OpenB excerpt, a run in which nothing
queues says so, no $0 cost for an unpriced fleet, fragmentation with a unit, progress.

data/openb_excerpt/ is 160 consecutive tasks of the OpenB trace (day 148, times shifted to
start at 0) and six of its 4- and 8-GPU tasks, on 8 of its nodes (30 GPUs): it queues.
"""

from __future__ import annotations

from dataclasses import replace
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from sim_helpers import job, simulate

from corral.cli import sim as cli_sim
from corral.sim import SimOptions, format_table, run
from corral.sim.cluster import gpus_cluster
from corral.sim.engine import Engine, EngineConfig, Progress
from corral.sim.policies import POLICIES, fifo, new_policy
from corral.sim.report import build_report
from corral.sim.runner import fitting_jobs, load_cluster_for, load_workload

EXCERPT = Path(__file__).parent / "data" / "openb_excerpt"
OPTIONS = SimOptions(trace=EXCERPT, format="openb")


def test_an_openb_excerpt_replay_gives_the_same_numbers_as_before() -> None:
    # Pinned from the engine before the corral policy kept state between rounds: the
    # scheduling (and so every number below) must not move.
    fifo_run = run(replace(OPTIONS, policy="fifo")).to_dict()
    assert {k: fifo_run[k] for k in PINNED_FIFO} == PINNED_FIFO
    corral_run = run(OPTIONS).to_dict()
    assert {k: corral_run[k] for k in PINNED_CORRAL} == PINNED_CORRAL


PINNED_FIFO = {
    "jobs": 165,
    "completed": 165,
    "avg_jct_s": 6589.818182,
    "p99_jct_s": 19205.0,
    "avg_queue_s": 5078.4,
    "utilization": 0.377101,
    "utilization_makespan": 0.292815,
    "fragmented_gpus": 0.582761,
    "allocated_gpu_hours": 138.181667,
    "makespan_s": 56629.0,
    "rounds": 262,
}
PINNED_CORRAL = {
    "jobs": 165,
    "completed": 165,
    "avg_jct_s": 1523.890909,
    "p99_jct_s": 11845.0,
    "avg_queue_s": 3.339394,
    "utilization": 0.630356,
    "fragmented_gpus": 0.422849,
    "preemptions": 5,
    "lost_gpu_hours": 0.418611,
    "allocated_gpu_hours": 138.600278,
    "rounds": 166,
}


def test_a_run_gets_its_own_stateful_scheduler_that_plans_as_place() -> None:
    first, second = new_policy("corral"), new_policy("corral")
    assert first is not second  # state from one run must not leak into the next
    assert new_policy("fifo") is POLICIES["fifo"]
    cluster = load_cluster_for(OPTIONS)
    jobs = fitting_jobs(load_workload(OPTIONS, cluster).jobs, cluster)
    outcomes = [
        Engine(cluster, jobs, EngineConfig(policy=policy)).run()
        for policy in (first, POLICIES["corral"])
    ]
    ends = [[(r.job.id, r.first_start, r.finished_at) for r in o.jobs] for o in outcomes]
    assert ends[0] == ends[1]
    assert outcomes[0].counters == outcomes[1].counters


def test_a_replay_in_which_nothing_queues_says_so() -> None:
    report = run(replace(OPTIONS, gpus=512))
    assert report.waited == 0 and report.avg_queue_s == 0
    assert 0 < report.peak_used_gpus < 512
    note = next(n for n in report.notes if "no job waited" in n)
    assert "the fleet was never the bottleneck" in note
    assert f"peak {report.peak_used_gpus} of 512 GPUs" in note
    busy = run(replace(OPTIONS, policy="fifo"))
    assert busy.waited > 0 and not any("no job waited" in n for n in busy.notes)
    # Side by side, the note names the run it is about.
    lines = format_table([busy, report]).splitlines()
    assert f"note: corral: {note}" in lines and f"note: {note}" not in lines


def test_cost_is_not_applicable_on_an_unpriced_fleet_rather_than_zero() -> None:
    unpriced = run(OPTIONS)  # OpenB's node list has no prices
    assert unpriced.allocated_cost is None
    assert unpriced.to_dict()["allocated_cost"] is None
    assert any("no prices" in n for n in unpriced.notes)
    priced = run(replace(OPTIONS, gpus=32))  # --gpus: H100 at $2.50 per GPU-hour
    assert priced.allocated_cost == pytest.approx(priced.allocated_gpu_hours * 2.5)
    table = format_table([unpriced, priced]).splitlines()
    cost = next(line for line in table if line.startswith("cost ($)"))
    assert cost.split()[2:] == ["n/a", f"${priced.allocated_cost:,.2f}"]


def test_fragmentation_is_fragmented_over_idle_gpu_hours() -> None:
    # Nodes of 8 and 4 GPUs; every job takes 8. The 4-GPU node is idle and useless to all
    # of them throughout: 4 fragmented GPUs of 4 idle while the 8-GPU node is busy.
    jobs = [job("a", 0, 8, 100), job("b", 100, 8, 100)]
    out = simulate(jobs, fifo, gpus_cluster(12))
    report = build_report(out, policy="fifo", seed=0, nodes=2, gpus=12)
    assert report.idle_gpus == pytest.approx(4.0)
    assert report.fragmented_gpus == pytest.approx(4.0)
    assert report.fragmentation == pytest.approx(1.0)
    # The excerpt: the two figures agree whatever the fleet.
    for r in (run(OPTIONS), run(replace(OPTIONS, gpus=64))):
        assert r.fragmented_gpus == pytest.approx(r.fragmentation * r.idle_gpus, rel=1e-9)


def test_every_figure_in_the_table_has_its_unit_and_fragmentation_is_defined() -> None:
    table = format_table([run(OPTIONS)])
    lines = table.splitlines()
    counts = {"jobs", "completed", "unfinished", "dropped", "waited", "preemptions"}
    counts |= {"failures", "attempts", "rounds"}
    for line in lines[1:]:
        if line.startswith(("note:", "definition:")):
            continue
        label = line.rsplit("  ", 1)[0].strip()
        assert "(" in label or label.split()[-1] in counts, label
    util = next(line for line in lines if line.startswith("utilization, arrivals"))
    assert "(% of GPU-h)" in util and util.endswith("63.04%")
    assert any(line.startswith("fragmented (GPUs, time-avg)") for line in lines)
    assert any(line.startswith("fragmentation (% of idle GPU-h)") for line in lines)
    assert lines[-1].startswith("definition: fragmented GPUs: idle GPUs that a job")


def test_a_fill_run_with_no_completed_job_shows_no_jct_rather_than_zero() -> None:
    fill = run(replace(OPTIONS, fill=1.0, seed=3))
    assert fill.completed == 0
    lines = format_table([fill]).splitlines()
    for label in ("avg JCT (h)", "p50 JCT (h)", "p99 JCT (h)"):
        assert next(line for line in lines if line.startswith(label)).endswith(" n/a")
    assert next(line for line in lines if line.startswith("allocated at 100%")).endswith("%")


def test_the_plot_axes_carry_units() -> None:
    pytest.importorskip("matplotlib")
    from corral.sim.plot import figure

    fig = figure([run(OPTIONS)])
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    assert labels == [
        ("simulated time (h)", "GPUs allocated (% of fleet)"),
        ("simulated time (h)", "GPUs queued (GPUs)"),
        ("simulated time (h)", "fragmented (% of idle GPUs)"),
    ]
    quiet = figure([run(replace(OPTIONS, gpus=512))])
    assert any("no job waited" in t.get_text() for t in quiet.axes[1].texts)


def test_the_engine_reports_progress_without_changing_the_run() -> None:
    cluster = load_cluster_for(OPTIONS)
    jobs = fitting_jobs(load_workload(OPTIONS, cluster).jobs, cluster)
    seen: list[Progress] = []
    watched = Engine(cluster, jobs, EngineConfig(policy=fifo)).run(seen.append)
    plain = Engine(cluster, jobs, EngineConfig(policy=fifo)).run()
    assert [r.finished_at for r in watched.jobs] == [r.finished_at for r in plain.jobs]
    assert len(seen) > 2 and seen[-1].finished and seen[-1].fraction == 1.0
    assert not any(p.finished for p in seen[:-1])
    events = [p.events for p in seen]
    assert events == sorted(events) and len(set(events)) == len(events)
    assert [p.now_s for p in seen] == sorted(p.now_s for p in seen)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1
    assert seen[-1].arrived == seen[-1].settled == seen[-1].jobs == len(jobs)


def _console(terminal: bool) -> tuple[Console, StringIO]:
    buffer = StringIO()
    return Console(file=buffer, force_terminal=terminal, width=160), buffer


def test_the_cli_draws_a_bar_on_a_terminal() -> None:
    console, buffer = _console(terminal=True)
    with cli_sim.ProgressView("corral", console) as view:
        run(OPTIONS, view.update)
    drawn = buffer.getvalue()
    assert "simulating corral" in drawn and "events/s" in drawn and "sim time" in drawn


def test_the_cli_writes_occasional_plain_lines_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console, buffer = _console(terminal=False)
    with cli_sim.ProgressView("fifo", console) as view:  # quick: nothing at all
        run(replace(OPTIONS, policy="fifo"), view.update)
    assert buffer.getvalue() == ""
    monkeypatch.setattr(cli_sim, "PLAIN_EVERY_S", 0.0)
    with cli_sim.ProgressView("fifo", console) as view:
        run(replace(OPTIONS, policy="fifo"), view.update)
    lines = buffer.getvalue().splitlines()
    assert len(lines) > 2 and "\x1b" not in buffer.getvalue()
    assert lines[0].startswith("sim fifo: ") and "events/s · sim time" in lines[0]
    assert lines[-1].startswith("sim fifo: done · ")


def test_simulated_time_reads_in_hours_then_days() -> None:
    assert cli_sim.sim_time(5400) == "1.5 h"
    assert cli_sim.sim_time(149.3 * 86400) == "3,583 h (149.3 d)"


def test_the_openb_loader_says_how_long_the_trace_spans() -> None:
    notes = load_workload(OPTIONS, load_cluster_for(OPTIONS)).notes
    assert "openb: 166 tasks from openb_pod_list_default.csv, submitted over 0.2 days" in notes
