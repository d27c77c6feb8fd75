"""What the autoscaler does for a waiting job shows in that job's pending reason: the pool
growing for it (and which pools rest after a failed launch), or why no pool can hold it.
A note lasts while the job waits and its nodes boot; it goes when the job is placed."""

from __future__ import annotations

from corral.core.placement import Demand, PlacementPlan
from corral.core.pools import FleetFacts, FleetPlan, Grow, PoolFacts, WaitingGang
from corral.providers.base import Shape
from corral.server.controllers.scheduler import with_notes
from corral.server.services.pool_fleet import supply_notes

NOW = 1000.0


def _pool(name: str, *, blocked: str | None = None) -> PoolFacts:
    return PoolFacts(
        name=name,
        provider="aws",
        instance_type="p5.48xlarge",
        region="us-east-1",
        zone=None,
        spot=False,
        shape=Shape("H100", 8, 192, 2_000_000),
        price_per_hour=98.32,
        min_nodes=0,
        max_nodes=4,
        blocked_until=NOW + 300 if blocked else None,
        blocked_reason=blocked,
    )


def _gang(job: str) -> WaitingGang:
    return WaitingGang(job, 2, Demand(gpus=8, gpu_type="H100"), False, 0.0)


def test_a_grow_names_the_pool_and_the_pools_resting_after_a_failed_launch() -> None:
    facts = FleetFacts(
        pools=(_pool("east", blocked="InsufficientInstanceCapacity in us-east-1a"), _pool("west")),
        members=(),
        waiting=(_gang("j1"), _gang("j2")),
    )
    plan = FleetPlan(grow=(Grow("west", 2, ("j1",), "2 x p5.48xlarge"),), unmet={"j2": "too big"})
    notes = supply_notes(facts, plan, {}, NOW)
    assert notes == {
        "j1": "pool west is adding 2 nodes for it; pool east is resting after a failed "
        "launch: InsufficientInstanceCapacity in us-east-1a",
        "j2": "too big",
    }


def test_a_note_stays_while_the_job_waits_and_goes_when_it_does_not() -> None:
    before = {"j1": "pool west is adding a node for it", "gone": "pool west is adding a node"}
    facts = FleetFacts(pools=(_pool("west"),), members=(), waiting=(_gang("j1"),))
    assert supply_notes(facts, FleetPlan(), before, NOW) == {
        "j1": "pool west is adding a node for it"
    }


def test_the_scheduler_appends_the_note_to_the_reason_of_the_job_it_is_for() -> None:
    plan = PlacementPlan(
        placements=(), pending_reasons={"j1": "no node has 8 free H100", "j2": "x"}
    )
    noted = with_notes(plan, {"j1": "pool west is adding a node for it"})
    assert noted.pending_reasons == {
        "j1": "no node has 8 free H100; pool west is adding a node for it",
        "j2": "x",
    }
    assert with_notes(plan, {}) is plan
