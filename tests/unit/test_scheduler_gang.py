"""Gangs: all replicas in one decision or none; ranks, GPUs and the master port."""

from __future__ import annotations

from test_scheduler_helpers import A100, H100, job, node, where, world

from corral.core.placement import FIRST_MASTER_PORT, NodeState, Outcome, place
from corral.core.scheduler import SchedulerConfig


def test_a_gang_that_does_not_fit_takes_nothing() -> None:
    # The 2x8 gang fits nowhere; the 1x8 job behind it still gets the only free node.
    plan = place(world([node("a"), node("b", 4)], [job("big", 8, 2), job("one", 8, at=1)]), 0.0)
    assert where(plan) == {"one": ["a"]}
    assert plan.outcome("big") == Outcome.UNRESOLVABLE


def test_ranks_follow_placement_and_master_is_rank_zero() -> None:
    plan = place(world([node("a"), node("b")], [job("g", 8, 2)]), 0.0)
    (gang,) = plan.placements
    assert [r.rank for r in gang.replicas] == [0, 1]
    assert {r.node_id for r in gang.replicas} == {"a", "b"}
    assert all(r.gpus == tuple(range(8)) for r in gang.replicas)
    assert gang.master_port == FIRST_MASTER_PORT


def test_master_port_skips_ports_in_use_on_rank_zeros_node() -> None:
    n = node("a")
    busy = NodeState(**{**n.__dict__, "used_ports": frozenset({29500, 29501})})
    plan = place(world([busy], [job("g", 1)]), 0.0)
    assert plan.placements[0].master_port == 29502


def test_master_port_base_is_configurable() -> None:
    plan = place(world([node("a")], [job("g", 1)]), 0.0, SchedulerConfig(first_master_port=40000))
    assert plan.placements[0].master_port == 40000


def test_replicas_of_one_gang_never_share_a_gpu() -> None:
    plan = place(world([node("a")], [job("g", 2, 4)]), 0.0)
    gpus = [g for r in plan.placements[0].replicas for g in r.gpus]
    assert sorted(gpus) == list(range(8))


def test_a_gang_never_mixes_gpu_models() -> None:
    plan = place(world([node("h", model=H100), node("a", model=A100)], [job("g", 8, 2)]), 0.0)
    assert plan.outcome("g") == Outcome.UNRESOLVABLE


def test_two_gangs_cannot_both_half_hold_the_same_nodes() -> None:
    # Each gang needs both nodes whole; one gets them, the other waits with nothing held.
    plan = place(world([node("a"), node("b")], [job("x", 8, 2), job("y", 8, 2, at=1)]), 0.0)
    assert list(where(plan)) == ["x"]
    assert plan.outcome("y") == Outcome.UNSCHEDULABLE
