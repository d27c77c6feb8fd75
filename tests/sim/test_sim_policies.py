"""The three policies on tiny workloads whose completion times are worked out by hand.

One node of 4 GPUs. A (2 GPUs, 100 s) runs from 0; B (4 GPUs) cannot start until A ends.
"""

from __future__ import annotations

import pytest
from sim_helpers import jcts, job, simulate

from corral.core import placement
from corral.core.placement import PlacementPlan, Snapshot
from corral.sim.cluster import gpus_cluster
from corral.sim.policies import POLICIES, corral, fifo, fifo_backfill

ABC = [
    job("A", 0, 2, 100),
    job("B", 1, 4, 50),
    job("C", 2, 2, 20),
]
ABCD = [*ABC, job("D", 3, 2, 200)]


def test_fifo_blocks_behind_the_head() -> None:
    # A 0-100; B waits for A: 100-150; C and D wait behind B, both start at 150.
    assert jcts(simulate(ABCD, fifo)) == {"A": 100, "B": 149, "C": 168, "D": 347}


def test_easy_backfill_starts_only_what_ends_before_the_reservation() -> None:
    # B is reserved for t=100. C (2-22) ends before it: backfilled. D (200 s) would hold
    # 2 GPUs past t=100 and delay B: it waits, and starts when B ends at 150.
    assert jcts(simulate(ABCD, fifo_backfill)) == {"A": 100, "B": 149, "C": 20, "D": 347}


def test_corral_places_what_fits() -> None:
    # Whatever else the scheduler does, C fits beside A and delays nobody.
    assert jcts(simulate(ABC, corral)) == {"A": 100, "B": 149, "C": 20}


def test_gangs_span_nodes_all_or_nothing() -> None:
    # 2 nodes x 8: G (2x8) must wait for the whole cluster; S (8) runs first.
    jobs = [job("S", 0, 8, 30), job("G", 1, 8, 10, replicas=2)]
    for policy in POLICIES.values():
        out = simulate(jobs, policy, gpus_cluster(16))
        assert jcts(out) == {"S": 30, "G": 39}


def test_the_corral_policy_is_the_real_place(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = placement.place

    def spy(snapshot: Snapshot, now: float) -> PlacementPlan:
        calls.append(now)
        return real(snapshot, now)

    monkeypatch.setattr(placement, "place", spy)
    assert jcts(simulate(ABC, POLICIES["corral"])) == {"A": 100, "B": 149, "C": 20}
    assert calls  # one call per round that had a queue
    assert calls == sorted(calls)


def test_rounds_batch_an_instant_and_skip_quiet_times() -> None:
    # Three arrivals at one instant make one round; nothing happens between events.
    jobs = [job("x", 0, 1, 10), job("y", 0, 1, 10), job("z", 0, 1, 10)]
    out = simulate(jobs, fifo)
    assert out.counters.rounds == 1
    assert jcts(out) == {"x": 10, "y": 10, "z": 10}


def test_a_periodic_round_delays_starts_to_its_tick() -> None:
    out = simulate([job("x", 3, 1, 10)], fifo, round_s=60.0)
    assert jcts(out) == {"x": 67}  # placed at the t=60 round
