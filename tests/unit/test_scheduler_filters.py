"""Filters: what fits a node, and what never fits as asked (unresolvable)."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import A100, H100, job, node, running, where, world

from corral.core.placement import Outcome, PendingJob, place


def _decide(nodes: list, pending: PendingJob, run: list | None = None):  # type: ignore[no-untyped-def]
    plan = place(world(nodes, [pending], run or []), 0.0)
    return plan.outcome(pending.id), plan.pending_reasons.get(pending.id, ""), plan


@pytest.mark.parametrize(
    ("case", "nodes", "pending", "outcome", "says"),
    [
        (
            "no such model",
            [node("a")],
            job("j", 1, gpu_type="B200"),
            Outcome.UNRESOLVABLE,
            "no ready node has B200 GPUs (models here: NVIDIA H100 80GB HBM3)",
        ),
        (
            "GPU memory too small",
            [node("a", model=A100)],
            job("j", 1, min_memory=80_000),
            Outcome.UNRESOLVABLE,
            "with at least 80000Mi each",
        ),
        (
            "more GPUs per replica than any node",
            [node("a")],
            job("j", 16),
            Outcome.UNRESOLVABLE,
            "needs 16×GPUs per replica; the largest ready node has 8",
        ),
        (
            "only 7 healthy GPUs",
            [node("a", unhealthy=[3])],
            job("j", 8),
            Outcome.UNRESOLVABLE,
            "the largest ready node has 7",
        ),
        (
            "too many CPUs",
            [node("a", cpus=64)],
            job("j", 1, cpus=65),
            Outcome.UNRESOLVABLE,
            "needs 65 CPUs per replica; the largest ready node has 64",
        ),
        (
            "too much memory",
            [node("a")],
            job("j", memory_mb=600_000),
            Outcome.UNRESOLVABLE,
            "Mi memory per replica",
        ),
        (
            "too much disk",
            [node("a")],
            job("j", disk_mb=2_000_000),
            Outcome.UNRESOLVABLE,
            "Mi disk per replica",
        ),
        (
            "selector matches nothing",
            [node("a", labels={"pool": "x"})],
            job("j", 1, selector={"pool": "y"}),
            Outcome.UNRESOLVABLE,
            "node_selector pool=y matches no ready node",
        ),
        (
            "unknown topology word",
            [node("a")],
            job("j", 1, topology="galaxy"),
            Outcome.UNRESOLVABLE,
            "unknown topology 'galaxy'",
        ),
        (
            "zero replicas",
            [node("a")],
            job("j", 1, replicas=0),
            Outcome.UNRESOLVABLE,
            "needs at least 1 replica",
        ),
        ("no node at all", [], job("j", 1), Outcome.UNSCHEDULABLE, "none is connected"),
        ("fits", [node("a")], job("j", 8), Outcome.PLACED, ""),
        ("seven healthy of eight", [node("a", unhealthy=[0])], job("j", 7), Outcome.PLACED, ""),
        (
            "model matched by substring, any case",
            [node("a", model=A100)],
            job("j", 1, gpu_type="a100"),
            Outcome.PLACED,
            "",
        ),
        (
            "selector matches",
            [node("a"), node("b", labels={"pool": "x"})],
            job("j", 1, selector={"pool": "x"}),
            Outcome.PLACED,
            "",
        ),
    ],
)
def test_fit(case: str, nodes: list, pending: PendingJob, outcome: Outcome, says: str) -> None:
    got, reason, _ = _decide(nodes, pending)
    assert got == outcome, case
    assert says in reason, (case, reason)


def test_busy_now_may_fit_later() -> None:
    busy = running("r", [("a", range(6))], preemptible=False)
    got, reason, plan = _decide([node("a")], job("j", 4), [busy])
    assert got == Outcome.UNSCHEDULABLE
    assert "j" not in plan.never_fits
    assert reason.startswith("needs 1× 4 GPUs in one node; the freest node has 2 free")


def test_cpus_short_where_gpus_are_free_is_said() -> None:
    hog = running("r", [("a", [])], preemptible=False, cpus=63)
    got, reason, _ = _decide([node("a", cpus=64)], job("j", 1, cpus=2), [hog])
    assert got == Outcome.UNSCHEDULABLE
    assert "CPUs, memory or disk are short where those GPUs are free" in reason


def test_an_unhealthy_gpu_is_never_given_and_selector_picks_the_node() -> None:
    nodes = [node("a", unhealthy=[0, 1]), node("b", labels={"pool": "x"})]
    plan = place(world(nodes, [job("j", 6), job("k", 2, selector={"pool": "x"})]), 0.0)
    assert where(plan) == {"j": ["a"], "k": ["b"]}
    assert plan.placements[0].replicas[0].gpus == (2, 3, 4, 5, 6, 7)


def test_cpu_only_jobs_prefer_nodes_whose_gpus_are_taken() -> None:
    full = running("r", [("a", range(8))], preemptible=False)
    plan = place(world([node("b"), node("a")], [job("cpu", 0, cpus=4)], [full]), 0.0)
    assert where(plan) == {"cpu": ["a"]}


def test_a_node_without_gpus_runs_cpu_work() -> None:
    plan = place(world([node("c", 0)], [job("x"), job("y", at=1)]), 0.0)
    assert sorted(where(plan)) == ["x", "y"]
    assert place(world([node("c", 0)], [job("g", 1)]), 0.0).outcome("g") == Outcome.UNRESOLVABLE


def test_memory_floor_picks_the_bigger_gpu() -> None:
    nodes = [node("small", model=A100), node("big", model=H100)]
    plan = place(world(nodes, [job("j", 1, min_memory=60_000)]), 0.0)
    assert where(plan) == {"j": ["big"]}


def test_never_fits_is_a_subset_of_pending_reasons() -> None:
    plan = place(world([node("a")], [job("x", 16), job("y", 4)]), 0.0)
    assert set(plan.never_fits) == {"x"}
    assert plan.never_fits["x"] == plan.pending_reasons["x"]
    assert plan.outcome("y") == Outcome.PLACED


def test_excluded_nodes_are_avoided_and_when_none_is_left_the_reason_says_so() -> None:
    from dataclasses import replace

    pending = replace(job("j", 8), excluded_nodes=frozenset({"a"}))
    outcome, _, plan = _decide([node("a"), node("b")], pending)
    assert outcome is Outcome.PLACED and where(plan) == {"j": ["b"]}
    outcome, says, _ = _decide([node("a")], pending)
    assert outcome is not Outcome.PLACED
    assert "every ready node is excluded for this job (1 failed it recently)" in says
