"""Backfill (EASY): a reservation for the blocked head; later jobs must not delay it."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import job, node, running, where, world

from corral.core.placement import Outcome, place
from corral.core.scheduler import SchedulerConfig

NOW = 1000.0


def _fleet(end_a: float | None = NOW + 100, end_b: float | None = NOW + 1000):  # type: ignore[no-untyped-def]
    # Node a: 4 of 8 GPUs held until NOW+100; node b: full until NOW+1000.
    nodes = [node("a"), node("b")]
    run = [
        running("ra", [("a", range(4))], preemptible=False, end=end_a),
        running("rb", [("b", range(8))], preemptible=False, end=end_b),
    ]
    return nodes, run


def test_the_blocked_head_gets_a_reservation_with_a_start_time() -> None:
    nodes, run = _fleet()
    plan = place(world(nodes, [job("head", 8, prio=100)], run), NOW)
    (r,) = plan.reservations
    assert (r.job_id, r.start_at, r.node_ids) == ("head", NOW + 100, ("a",))
    assert "reserved: expected to start in 1m on node a" in plan.pending_reasons["head"]


@pytest.mark.parametrize(
    ("case", "max_runtime", "placed"),
    [
        ("ends before the reservation", 50.0, True),
        ("ends exactly at it", 100.0, True),
        ("would delay the head", 500.0, False),
        ("no runtime estimate", None, False),
    ],
)
def test_a_later_job_backfills_only_if_it_ends_first(
    case: str, max_runtime: float | None, placed: bool
) -> None:
    nodes, run = _fleet()
    pending = [job("head", 8, prio=100), job("small", 4, at=1, max_runtime=max_runtime)]
    plan = place(world(nodes, pending, run), NOW)
    assert ("small" in where(plan)) is placed, case
    if not placed:
        assert "nodes reserved for head are left out" in plan.pending_reasons["small"]


def test_a_later_job_uses_unreserved_nodes_freely() -> None:
    nodes, run = _fleet()
    nodes.append(node("c"))
    run.append(running("rc", [("c", range(6))], preemptible=False, end=NOW + 5000))
    pending = [job("head", 8, prio=100), job("small", 2, at=1)]
    plan = place(world(nodes, pending, run), NOW)
    assert where(plan) == {"small": ["c"]}


def test_without_runtime_estimates_there_is_no_guarantee() -> None:
    nodes, run = _fleet(end_a=None, end_b=None)
    pending = [job("head", 8, prio=100), job("small", 4, at=1)]
    plan = place(world(nodes, pending, run), NOW)
    assert plan.reservations == ()
    assert where(plan) == {"small": ["a"]}
    assert "no start-time guarantee" in plan.pending_reasons["head"]


def test_backfill_off_by_config() -> None:
    nodes, run = _fleet()
    pending = [job("head", 8, prio=100), job("small", 4, at=1, max_runtime=500)]
    plan = place(world(nodes, pending, run), NOW, SchedulerConfig(backfill=False))
    assert plan.reservations == ()
    assert "small" in where(plan)


def test_only_the_first_blocked_job_is_reserved_for() -> None:
    nodes, run = _fleet()
    pending = [job("head", 8, prio=100), job("second", 8, prio=50, at=1)]
    plan = place(world(nodes, pending, run), NOW)
    assert [r.job_id for r in plan.reservations] == ["head"]
    assert plan.outcome("second") == Outcome.UNSCHEDULABLE


def test_the_shadow_time_is_the_earliest_end_that_makes_room() -> None:
    # Three jobs end at +10, +20 and +30 on node a; the 6-GPU head needs the first two.
    nodes = [node("a")]
    run = [
        running("r1", [("a", [0, 1, 2])], preemptible=False, end=NOW + 10),
        running("r2", [("a", [3, 4, 5])], preemptible=False, end=NOW + 20),
        running("r3", [("a", [6, 7])], preemptible=False, end=NOW + 30),
    ]
    plan = place(world(nodes, [job("head", 6)], run), NOW)
    assert plan.reservations[0].start_at == NOW + 20
