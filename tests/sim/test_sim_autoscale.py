"""The simulator with node pools: the fleet autoscaler over two clouds with different prices.

sim-b sells H100 nodes at $72/h, sim-a at $98/h (the catalog's `sim` provider): a burst is
served from sim-b first, sim-a takes what sim-b cannot hold, every job finishes, and the
nodes go back once idle past their grace period.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral.providers.base import InstanceState, JoinInfo, LaunchRequest, ProviderError
from corral.providers.sim import SimProvider
from corral.sim import SimOptions, run
from corral.sim.engine import Engine, EngineConfig
from corral.sim.policies import new_policy
from corral.sim.report import supply_figures
from corral.sim.supply import Supply, parse_supply, slot_cluster
from corral.sim.workload import Job
from corral.spec.errors import SpecError

BOOT_S = 120.0
IDLE_S = 600.0


def pools(**extra: Any) -> dict[str, Any]:
    return {
        "boot": BOOT_S,
        "pools": [
            {"name": "a-h100", "type": "h100x8", "region": "sim-a", "max": 8, "idle_after": IDLE_S},
            {"name": "b-h100", "type": "h100x8", "region": "sim-b", "max": 3, "idle_after": IDLE_S},
            {
                "name": "b-spot",
                "type": "h100x8",
                "region": "sim-b",
                "spot": True,
                "max": 2,
                "idle_after": IDLE_S,
            },
        ],
        **extra,
    }


def burst(n: int, at: float = 1000.0, preemptible: bool = False, hours: float = 1.0) -> list[Job]:
    return [
        Job(
            id=f"{'p' if preemptible else 'j'}{at:.0f}-{i:02d}",
            submit_s=at + i,
            duration_s=hours * 3600,
            gpus=8,
            cpus=16,
            gpu_type="H100",
            preemptible=preemptible,
            priority=0 if preemptible else 10,
        )
        for i in range(n)
    ]


def simulate(jobs: list[Job], spec: dict[str, Any], fixed: bool = False) -> tuple[Engine, Supply]:
    supply_spec = parse_supply(spec)
    cluster = slot_cluster(supply_spec)
    index = {n.id: i for i, n in enumerate(cluster.nodes)}
    supply = Supply(supply_spec, index, fixed=fixed)
    engine = Engine(cluster, jobs, EngineConfig(policy=new_policy("corral")), supply)
    outcome = engine.run()
    assert all(r.state == "done" for r in outcome.jobs), "every job finishes"
    return engine, supply


def test_a_burst_fills_the_cheaper_cloud_first_then_the_dearer_one() -> None:
    jobs = burst(5)
    engine, supply = simulate(jobs, pools())
    hours = supply_figures(supply, engine.queue.now)["pool_node_hours"]
    # sim-b ($72) holds 3 nodes; the other 2 come from sim-a ($98); no spot for this work.
    assert hours["b-h100"] == pytest.approx(3 * (3600 + BOOT_S + IDLE_S) / 3600, rel=0.01)
    assert hours["a-h100"] == pytest.approx(2 * (3600 + BOOT_S + IDLE_S) / 3600, rel=0.01)
    assert hours["b-spot"] == 0
    grows = [what for _, what in supply.stats.decisions if ": grow " in what]
    assert grows[0].startswith("b-h100: grow 1 x h100x8 (on-demand, $72.00/h each) in sim-b")
    # Each job waited for a node to boot, no longer.
    for run_ in engine.world.jobs:
        assert run_.first_start == pytest.approx(run_.job.submit_s + BOOT_S)


def test_a_small_burst_uses_only_the_cheaper_cloud() -> None:
    engine, supply = simulate(burst(2), pools())
    hours = supply_figures(supply, engine.queue.now)["pool_node_hours"]
    assert hours["a-h100"] == 0 and hours["b-h100"] > 0


def test_nodes_are_released_after_the_burst() -> None:
    engine, supply = simulate(burst(5), pools())
    assert supply.members == {}  # nobody left in the fleet
    assert supply.stats.launches == supply.stats.releases == 5
    # One job per node: each node goes back exactly its idle grace after its job ended.
    ends = sorted(r.finished_at or 0.0 for r in engine.world.jobs)
    releases = sorted(t for t, what in supply.stats.decisions if ": release " in what)
    assert releases == [end + IDLE_S for end in ends]
    assert engine.world.up_gpus == 0


def test_preemptible_work_goes_to_spot_first() -> None:
    engine, supply = simulate(burst(3, preemptible=True), pools())
    hours = supply_figures(supply, engine.queue.now)["pool_node_hours"]
    assert hours["b-spot"] > 0  # 2 spot nodes ($35/h) ...
    assert hours["b-h100"] > 0 and hours["a-h100"] == 0  # ... then the cheapest on-demand


def test_autoscaled_pools_cost_less_than_fixed_ones_for_the_same_jobs() -> None:
    jobs = burst(5) + burst(5, at=5 * 3600.0)
    e1, autoscaled = simulate(jobs, pools())
    e2, fixed = simulate(jobs, pools(), fixed=True)
    end = max(e1.queue.now, e2.queue.now)
    assert autoscaled.cost(end) < 0.5 * fixed.cost(end)
    assert fixed.stats.launches == 0 and fixed.stats.peak_nodes == 13


def test_out_of_capacity_falls_back_to_the_next_cloud() -> None:
    spec = pools(capacity=[{"region": "sim-b", "type": "h100x8", "count": 1}])
    engine, supply = simulate(burst(3), spec)
    assert supply.stats.launch_errors >= 1
    hours = supply_figures(supply, engine.queue.now)["pool_node_hours"]
    assert hours["b-h100"] > 0 and hours["a-h100"] > 0
    failed = [what for _, what in supply.stats.decisions if "launch failed" in what]
    assert "no h100x8 capacity left in sim-b" in failed[0]


def test_min_nodes_are_kept_and_billed_all_along() -> None:
    spec = pools()
    spec["pools"][1]["min"] = 1
    engine, supply = simulate(burst(1), spec)
    assert len(supply.members) == 1  # the one kept at min
    seconds = supply.node_seconds(engine.queue.now)
    assert seconds["b-h100"] == pytest.approx(engine.queue.now)  # launched at t=0


def test_same_seed_same_report_and_the_bursty_day_finishes(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(json.dumps(pools()))  # YAML is a superset of JSON
    options = SimOptions(format="bursty", pools=path, bill_until_s=86400.0, max_jobs=60)
    first, second = run(options), run(options)
    assert first.to_json() == second.to_json()
    assert first.completed == first.jobs == 60
    assert first.releases == first.launches > 0
    fixed = run(replace(options, fixed_pools=True))
    assert fixed.policy == "fixed pools" and fixed.launches == 0
    assert first.node_cost is not None and fixed.node_cost is not None
    assert first.node_cost < fixed.node_cost
    # Utilization is of the GPUs up at each instant: the autoscaled fleet is busier.
    assert 0 < fixed.utilization < first.utilization <= 1


def test_bad_pools_file_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"pools\[0\]\.type: 'h200' is not a sim type"):
        parse_supply({"pools": [{"name": "x", "type": "h200", "region": "sim-a", "max": 1}]})
    with pytest.raises(SpecError, match=r"pools\[0\]\.region: the catalog has no spot price"):
        parse_supply(
            {"pools": [{"name": "x", "type": "a100x8", "region": "sim-b", "spot": True, "max": 1}]}
        )
    with pytest.raises(SpecError, match=r"pools\[0\]\.max: "):
        parse_supply({"pools": [{"name": "x", "type": "h100x8", "region": "sim-a"}]})


def test_cli_runs_pools_and_the_fixed_baseline(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(json.dumps(pools()))
    args = ["--format", "bursty", "--max-jobs", "40", "--pools", str(path), "--fixed-pools"]
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "sim", *args, "--bill-until", "24", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["policy"] for r in lines] == ["corral + autoscaler", "fixed pools"]
    assert lines[0]["node_cost"] < lines[1]["node_cost"]
    bad = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "sim", "--fixed-pools"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--fixed-pools needs --pools FILE" in bad.stderr


def test_a_node_that_does_not_join_in_time_is_given_back_and_the_next_cloud_tried() -> None:
    spec = pools()
    spec["pools"][1]["join_timeout"] = BOOT_S / 2  # sim-b's nodes boot slower than this
    engine, supply = simulate(burst(1), spec)
    said = [what for _, what in supply.stats.decisions]
    assert said[0].startswith("b-h100: grow 1")
    assert said[1] == f"b-h100: release b-h100-000: did not join within {BOOT_S / 2:g} s"
    assert said[2].startswith("a-h100: grow 1")
    run_ = engine.world.jobs[0]
    # It waited for the first launch to time out, then for a sim-a node to boot.
    assert run_.first_start == pytest.approx(run_.job.submit_s + BOOT_S / 2 + BOOT_S)


def test_the_sim_provider_boots_on_the_virtual_clock() -> None:
    now = [0.0]
    provider = SimProvider(lambda: now[0], boot_s=100.0, capacity={("sim-b", "h100x8"): 2})
    joins = tuple(JoinInfo("sim://", "", f"n{i}") for i in range(2))
    launched = provider.launch(LaunchRequest("b", "h100x8", "sim-b", None, None, False, joins))
    assert [i.node_name for i in launched] == ["n0", "n1"]
    assert {i.state for i in provider.list("b")} == {InstanceState.PENDING}
    assert provider.joins_at(launched[0].provider_id) == 100.0
    now[0] = 100.0
    assert {i.state for i in provider.list()} == {InstanceState.RUNNING}
    with pytest.raises(ProviderError) as err:
        provider.launch(LaunchRequest("b", "h100x8", "sim-b", None, None, False, joins[:1]))
    assert err.value.retry_elsewhere
    provider.terminate([launched[0].provider_id, "unknown"])
    states = {i.node_name: i.state for i in provider.list()}
    assert states == {"n0": InstanceState.TERMINATED, "n1": InstanceState.RUNNING}
    # A terminated instance frees its capacity.
    provider.launch(LaunchRequest("b", "h100x8", "sim-b", None, None, False, joins[:1]))


def test_non_preemptible_work_waits_rather_than_run_on_spot_nodes() -> None:
    spec = pools()
    spec["pools"][0]["max"] = 1  # a-h100: one on-demand node; b-h100: none
    spec["pools"][1]["max"] = 0
    engine, _ = simulate(burst(2) + burst(1, at=1000.0, preemptible=True), spec, fixed=True)
    starts = {r.job.id: r.first_start for r in engine.world.jobs}
    # The two spot nodes are free all along; the second non-preemptible job waits for the
    # on-demand node instead, and the preemptible one runs on spot at once.
    assert starts == {"j1000-00": 1000.0, "j1000-01": 1000.0 + 3600.0, "p1000-00": 1000.0}


def test_a_warm_spare_starts_a_job_without_waiting_a_boot() -> None:
    spec = pools()
    spec["pools"][1]["spare"] = 1
    engine, supply = simulate(burst(2), spec)
    starts = sorted((r.first_start or 0.0) - r.job.submit_s for r in engine.world.jobs)
    # The spare's job at once; its replacement, launched then, is the next one's a second
    # later.
    assert starts == [0.0, BOOT_S - 1.0]
    assert len(supply.members) == 1  # the spare stays once the work is gone
    with pytest.raises(SpecError, match=r"pools\[1\]\.spare: expected <= max \(3\), got 4"):
        spec["pools"][1]["spare"] = 4
        parse_supply(spec)
