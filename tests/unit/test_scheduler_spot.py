"""Spot nodes (label spot=true) take only preemptible work, unless a job asks for spot."""

from __future__ import annotations

from test_scheduler_helpers import job, node, running, where, world

from corral.core.placement import Outcome, PendingJob, PlacementPlan, place
from corral.core.scheduler import reasons

SPOT = {"spot": "true"}


def _place(nodes: list, pending: list[PendingJob], run: list | None = None) -> PlacementPlan:  # type: ignore[type-arg]
    return place(world(nodes, pending, run or []), 0.0)


def test_a_non_preemptible_job_skips_spot_nodes_for_on_demand_ones() -> None:
    # Best fit would choose the 4-GPU spot node for a 4-GPU job, without the rule.
    plan = _place([node("spot-1", 4, labels=SPOT), node("od-1")], [job("j", 4)])
    assert where(plan).get("j", []) == ["od-1"]


def test_preemptible_jobs_and_jobs_asking_for_spot_run_there() -> None:
    plan = _place(
        [node("spot-1", labels=SPOT), node("spot-2", labels=SPOT)],
        [job("p", 8, preemptible=True), job("asks", 8, selector=SPOT)],
    )
    assert sorted(where(plan)["p"] + where(plan)["asks"]) == ["spot-1", "spot-2"]


def test_only_spot_nodes_ready_says_why_in_words() -> None:
    plan = _place([node("spot-1", labels=SPOT)], [job("j", 8)])
    assert plan.outcome("j") == Outcome.UNRESOLVABLE
    assert plan.pending_reasons["j"] == reasons.SPOT_ONLY.format(matching="")
    assert "non-preemptible job does not run on spot nodes" in plan.pending_reasons["j"]
    # With a selector the spot nodes match, the reason names it.
    plan = _place(
        [node("spot-1", labels={**SPOT, "team": "x"})], [job("k", 8, selector={"team": "x"})]
    )
    assert "every ready node matching node_selector team=x is one" in plan.pending_reasons["k"]


def test_on_demand_full_and_spot_free_the_job_waits() -> None:
    # The on-demand node is busy with work it may not preempt; the free spot node is not
    # for this job: it waits (the autoscaler grows an on-demand pool for it).
    busy = running("other", [("od-1", range(8))], prio=10, preemptible=False)
    plan = _place([node("od-1"), node("spot-1", labels=SPOT)], [job("j", 8)], [busy])
    assert plan.outcome("j") == Outcome.UNSCHEDULABLE
    assert where(plan).get("j", []) == []
    # Its reason must not leave the free spot GPUs unexplained.
    assert "1 spot node (spot=true) left out" in plan.pending_reasons["j"]


def test_a_mixed_fleet_with_no_spot_label_is_unchanged() -> None:
    plan = _place([node("a"), node("b")], [job("j", 8), job("k", 8)])
    assert sorted(where(plan)["j"] + where(plan)["k"]) == ["a", "b"]
