"""Reasons a user reads, the config's priority classes, and the public surface."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import job, node, running, world

import corral.core.scheduler as scheduler
from corral.core.placement import place
from corral.core.scheduler import DEFAULT_PRIORITY_CLASSES, Level, SchedulerConfig
from corral.core.scheduler.reasons import eta


def test_public_surface() -> None:
    assert sorted(scheduler.__all__) == [
        "DEFAULT_PRIORITY_CLASSES",
        "Level",
        "Reclaim",
        "Round",
        "Scheduler",
        "SchedulerConfig",
        "fragmentation",
        "fragmentation_counts",
    ]


def test_priority_classes_order_and_errors() -> None:
    config = SchedulerConfig()
    order = sorted(DEFAULT_PRIORITY_CLASSES, key=config.priority_of, reverse=True)
    assert order == ["endpoint", "dev", "train", "batch"]
    with pytest.raises(ValueError, match="unknown priority class 'urgent'; expected one of"):
        config.priority_of("urgent")
    assert SchedulerConfig(priority_classes={"x": 5}).priority_of("x") == 5
    assert SchedulerConfig().max_spread == Level.REGION


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (44.6, "45s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"), (7500, "2h05m"),
     (90000, "1d1h")],
)  # fmt: skip
def test_eta(seconds: float, text: str) -> None:
    assert eta(seconds) == text


def test_a_pending_reason_says_what_blocks_and_what_preemption_could_do() -> None:
    # Lower-priority jobs are in the way, but team-a's guarantee is held by its own
    # non-preemptible work and every GPU is guaranteed to someone (no unguaranteed pool).
    quotas = {"team-a": {"H100": 8}, "team-x": {"H100": 8}}  # team-b has none: it borrows
    run = [
        running("a-firm", [("a", range(8))], ws="team-a", preemptible=False, prio=100),
        *(running(f"b{i}", [("b", [i])], ws="team-b", prio=0) for i in range(3)),
    ]
    plan = place(
        world([node("a"), node("b")], [job("j", 8, ws="team-a", prio=100)], run, quotas), 0
    )
    reason = plan.pending_reasons["j"]
    assert reason.startswith(
        "workspace team-a holds 8 of its 8 guaranteed GPUs with non-preemptible jobs and "
        "guarantees cover all the ready fleet's GPUs; this non-preemptible job needs 8"
    )
    assert reason.endswith(
        "; preempting 3 lower-priority jobs would free GPUs, not guarantee, for workspace team-a"
    )


def test_a_capacity_reason_names_the_freest_domain() -> None:
    nodes = [node("a", rack="r1"), node("b", rack="r1"), node("c", rack="r1"), node("d", rack="r2")]
    run = [running("r", [("a", range(7))], preemptible=False)]
    plan = place(world(nodes, [job("g", 8, 3, topology="rack")], run), 0.0)
    assert plan.pending_reasons["g"].startswith(
        "needs 3× 8 GPUs in one rack; the freest rack has 17 free"
    )
