"""Preemption and failure accounting, and plans the engine must refuse."""

from __future__ import annotations

import pytest
from sim_helpers import jcts, job, simulate

from corral.core.placement import (
    GangPlacement,
    PlacementPlan,
    Preemption,
    ReplicaPlacement,
    Snapshot,
)
from corral.sim.cluster import gpus_cluster
from corral.sim.failures import Cause, FailureProfile
from corral.sim.policies import fifo
from corral.sim.state import PlanError


def preempt_for_urgent(snapshot: Snapshot, now: float) -> PlacementPlan:
    """Stub scheduler: `urgent` takes the GPUs of the running `batch` job in the same plan;
    otherwise FIFO first fit."""
    urgent = next((j for j in snapshot.pending if j.id == "urgent"), None)
    batch = next((r for r in snapshot.running if r.id == "batch"), None)
    if urgent is not None and batch is not None:
        gang = GangPlacement("urgent", batch.replicas, 29500)
        return PlacementPlan((gang,), preemptions=(Preemption("batch", "urgent", "priority"),))
    return fifo(snapshot, now)


def test_a_preempted_job_requeues_and_loses_work_since_its_checkpoint() -> None:
    # One node of 4. batch (4 GPUs, 1000 s) starts at 0 and checkpoints every 300 s.
    # urgent arrives at 700: batch is preempted with 600 s saved and 100 s lost.
    # urgent runs 700-800; batch resumes at 800 with 400 s left and ends at 1200.
    jobs = [job("batch", 0, 4, 1000, preemptible=True), job("urgent", 700, 4, 100, priority=9)]
    out = simulate(jobs, preempt_for_urgent, checkpoint_interval_s=300.0)
    assert jcts(out) == {"batch": 1200, "urgent": 100}
    c = out.counters
    assert c.preemptions == 1
    assert c.lost_gpu_s == 100 * 4
    assert c.allocated_gpu_s == (700 + 100 + 400) * 4
    batch = next(r for r in out.jobs if r.job.id == "batch")
    assert batch.attempt == 2
    assert batch.last_checkpoint_at == 600


def test_the_snapshot_shows_running_jobs_with_their_newest_checkpoint() -> None:
    seen: list[tuple[float, float | None, float | None]] = []

    def watch(snapshot: Snapshot, now: float) -> PlacementPlan:
        for r in snapshot.running:
            seen.append((now, r.last_checkpoint_at, r.expected_end))
        return fifo(snapshot, now)

    jobs = [job("long", 0, 4, 1000), job("w1", 250, 4, 1), job("w2", 700, 4, 1)]
    simulate(jobs, watch, checkpoint_interval_s=300.0)
    assert seen == [(250, None, 1000), (700, 600, 1000)]


def test_preemption_then_placement_in_a_later_round_at_the_same_instant() -> None:
    def two_step(snapshot: Snapshot, now: float) -> PlacementPlan:
        pending = {j.id for j in snapshot.pending}
        running = {r.id for r in snapshot.running}
        if "urgent" in pending and "batch" in running:
            return PlacementPlan((), preemptions=(Preemption("batch", "urgent", "priority"),))
        return fifo(snapshot, now)

    jobs = [job("batch", 0, 4, 1000), job("urgent", 700, 4, 100)]
    out = simulate(jobs, two_step, checkpoint_interval_s=None)
    # No checkpoint: all 700 s are lost; urgent starts at 700 (FIFO order favours batch,
    # which was submitted first, so batch goes back on first: urgent waits for it).
    assert out.counters.preemptions == 1
    assert out.counters.lost_gpu_s == 700 * 4
    assert jcts(out)["batch"] == 1700


def test_an_over_committing_plan_is_refused() -> None:
    def greedy(snapshot: Snapshot, now: float) -> PlacementPlan:
        del now
        node = snapshot.nodes[0].id
        return PlacementPlan(
            tuple(
                GangPlacement(j.id, (ReplicaPlacement(0, node, (0, 1, 2, 3)),), 29500)
                for j in snapshot.pending
            )
        )

    with pytest.raises(PlanError, match="not free"):
        simulate([job("a", 0, 4, 10), job("b", 0, 4, 10)], greedy)


def test_a_node_failure_ends_the_attempt_and_the_job_resumes_from_its_checkpoint() -> None:
    # A profile that fails a node about once an hour, repaired in about a minute.
    flaky = FailureProfile("flaky", 1, 8, 1 / 24, (Cause("faulty GPU", 1, 60.0, per_gpu=True),))
    jobs = [job(f"j{i}", i * 600.0, 8, 4 * 3600.0) for i in range(4)]
    out = simulate(
        jobs, fifo, gpus_cluster(16), failures=flaky, seed=3, checkpoint_interval_s=600.0
    )
    c = out.counters
    assert c.node_failures > 0
    assert c.interrupted_attempts > 0
    assert 0 < c.lost_gpu_s <= c.interrupted_attempts * 600 * 8
    assert all(r.state == "done" for r in out.jobs)
    # Useful work is exactly the jobs' work: allocated = useful + lost.
    assert c.allocated_gpu_s - c.lost_gpu_s == pytest.approx(4 * 4 * 3600 * 8)


def test_a_thermal_slowdown_counts_but_interrupts_nothing() -> None:
    # core.health judges a thermal slowdown degraded: the node keeps its work.
    hot = FailureProfile(
        "hot", 1, 8, 1 / 24, (Cause("GPU thermal interface/sensor", 1, 60.0, per_gpu=True),)
    )
    jobs = [job(f"j{i}", i * 600.0, 8, 4 * 3600.0) for i in range(4)]
    out = simulate(jobs, fifo, gpus_cluster(16), failures=hot, seed=3)
    c = out.counters
    assert c.failures_by_cause["GPU thermal interface/sensor"] > 0
    assert c.interrupted_attempts == 0 and c.lost_gpu_s == 0
    assert all(r.state == "done" for r in out.jobs)


def test_failures_repeat_with_the_seed() -> None:
    flaky = FailureProfile("flaky", 1, 8, 1 / 4, (Cause("software bug", 1, 300.0),))
    jobs = [job(f"j{i}", i * 60.0, 4, 3600.0) for i in range(12)]

    first = simulate(jobs, fifo, gpus_cluster(32), failures=flaky, seed=5)
    again = simulate(jobs, fifo, gpus_cluster(32), failures=flaky, seed=5)
    assert jcts(first) == jcts(again)
    assert first.counters == again.counters
    assert first.counters.node_failures > 0
    other = simulate(jobs, fifo, gpus_cluster(32), failures=flaky, seed=6)
    assert other.counters.failures_by_cause != first.counters.failures_by_cause or jcts(
        other
    ) != jcts(first)
