"""The Llama 3 405B failure profile: rates from its counts, and totals a run reproduces."""

from __future__ import annotations

import math

from corral.sim.failures import DAY_S, LLAMA3_405B, NodeFailures, failure_counts


def test_the_profile_is_the_papers_counts() -> None:
    counts = {c.name: c.count for c in LLAMA3_405B.causes}
    assert LLAMA3_405B.total == 419
    assert counts["faulty GPU"] == 148
    assert counts["GPU HBM3 memory"] == 72
    assert counts["software bug"] == 54
    assert len(counts) == 18
    assert (LLAMA3_405B.nodes, LLAMA3_405B.days) == (2048, 54)


def test_per_node_rates_follow_from_the_counts() -> None:
    faulty = LLAMA3_405B.causes[0]
    rate = LLAMA3_405B.rate_per_s(faulty, 8)
    assert math.isclose(rate * 2048 * 54 * DAY_S, 148)
    assert math.isclose(LLAMA3_405B.rate_per_s(faulty, 2), rate / 4)  # a GPU cause scales
    software = next(c for c in LLAMA3_405B.causes if c.name == "software bug")
    assert LLAMA3_405B.rate_per_s(software, 2) == LLAMA3_405B.rate_per_s(software, 8)


def test_54_days_on_2048_nodes_give_about_419_interruptions() -> None:
    counts = failure_counts(LLAMA3_405B, 2048, 8, 54 * DAY_S, seed=1)
    total = sum(counts.values())
    # Poisson: sd = sqrt(419) ~ 20.5; a fixed seed makes this exact, 3 sd is the tolerance.
    assert abs(total - 419) < 3 * math.sqrt(419)
    assert abs(counts["faulty GPU"] - 148) < 3 * math.sqrt(148)
    assert counts == failure_counts(LLAMA3_405B, 2048, 8, 54 * DAY_S, seed=1)
    assert counts != failure_counts(LLAMA3_405B, 2048, 8, 54 * DAY_S, seed=2)


def test_gpu_causes_carry_core_healths_verdict_and_the_others_none() -> None:
    process = NodeFailures(LLAMA3_405B, "n1", 8, seed=3)
    t, seen = 0.0, 0
    for _ in range(300):
        f = process.next(t)
        assert f is not None
        cause = LLAMA3_405B.causes[f.cause]
        assert (f.fault is not None) == cause.per_gpu
        seen += cause.per_gpu
        t = f.at + f.repair_s
    assert seen > 100  # 268 of 419 in the profile are GPU causes
