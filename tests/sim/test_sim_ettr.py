"""The ETTR simulator: one job, a failure profile, corral's recovery rules and goodput."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from corral.core.recovery import Cause
from corral.sim.ettr import MANIFEST, EttrOptions, job_mtbf_s, simulate
from corral.sim.failures import DAY_S, LLAMA3_405B, FailureProfile

# 64 nodes that fail as often, per job, as Llama 3's 2,048 did: ~80 interruptions in 10 days.
DENSE = replace(LLAMA3_405B, nodes=64)
SMALL = EttrOptions(nodes=64, spares=4, days=10, profile=DENSE)


def test_every_profile_cause_says_how_it_shows() -> None:
    assert {c.name for c in LLAMA3_405B.causes} == set(MANIFEST)


def test_without_failures_only_start_up_and_checkpoints_cost_time() -> None:
    calm = FailureProfile("calm", nodes=1, gpus_per_node=8, days=1, causes=())
    r = simulate(replace(SMALL, profile=calm, checkpoint_interval_s=990, checkpoint_cost_s=10))
    horizon = 10 * DAY_S
    saves = math.floor((horizon - 30) / 1000)
    assert r.goodput.ettr == pytest.approx((horizon - 30 - saves * 10) / horizon)
    assert sum(r.interruptions.values()) == 0 and r.goodput.lost_by_cause == {}


def test_the_interval_is_youngs_for_the_jobs_mtbf() -> None:
    r = simulate(SMALL)
    mtbf = job_mtbf_s(DENSE, 64, 8)
    assert mtbf == pytest.approx(54 * DAY_S / 419)
    assert r.checkpoint_interval_s == pytest.approx(math.sqrt(2 * 10 * mtbf))


def test_failures_are_recovered_and_every_second_is_accounted() -> None:
    r = simulate(SMALL)
    interruptions = sum(r.interruptions.values())
    assert 50 < interruptions < 120 and r.given_up is None
    # Each ends its attempt: restarted at once, or after waiting for a repaired node.
    assert r.verdicts["restart"] + r.verdicts["wait"] == interruptions
    g = r.goodput
    total = g.productive_s + g.checkpointing_s + g.startup_s + g.other_s
    assert total + sum(g.lost_by_cause.values()) == pytest.approx(10 * DAY_S)
    assert g.lost_by_cause[Cause.GPU_XID] > g.lost_by_cause[Cause.NODE_LOST] > 0
    assert 0.85 < g.ettr < 0.99


def test_same_seed_same_result_and_another_seed_another() -> None:
    a, b = simulate(SMALL), simulate(SMALL)
    assert (a.ettr, a.interruptions) == (b.ettr, b.interruptions)
    # GPU faults drawn as Xids and judged by core.health: the same ones, the same outages.
    assert (a.repairs, a.degraded, a.outages) == (b.repairs, b.degraded, b.outages)
    assert a.repairs["reboot-node"] > 0 and a.outages
    assert simulate(replace(SMALL, seed=2)).interruptions != a.interruptions


def test_slow_detection_and_hourly_checkpoints_cost_goodput() -> None:
    fast = simulate(SMALL)
    slow = simulate(replace(SMALL, detect_s=600, hang_detect_s=600))
    hourly = simulate(replace(SMALL, detect_s=600, hang_detect_s=600, checkpoint_interval_s=3600))
    assert fast.ettr > slow.ettr > hourly.ettr


def test_without_spares_the_job_waits_for_repairs() -> None:
    r = simulate(replace(SMALL, spares=0))
    assert r.given_up is None
    assert r.ettr < simulate(SMALL).ettr - 0.05, "hours of repairs instead of a spare"


def test_a_script_that_keeps_failing_is_given_up_on() -> None:
    buggy = FailureProfile(
        "buggy", nodes=64, gpus_per_node=8, days=10, causes=(replace(DENSE.causes[2], count=200),)
    )
    assert buggy.causes[0].name == "software bug"
    r = simulate(replace(SMALL, profile=buggy, max_restarts=3))
    assert r.given_up is not None and "max_restarts: 3" in r.given_up
    assert r.goodput.lost_by_cause[Cause.USER_ERROR] > 0
