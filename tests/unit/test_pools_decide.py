"""The fleet autoscaler's decision (core.pools.decide): examples, one rule each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from corral.core.placement import Demand
from corral.core.pools import (
    FleetFacts,
    FleetPlan,
    PoolFacts,
    PoolMember,
    WaitingGang,
    decide,
    pool_labels,
)
from corral.providers.base import Shape

H100X8 = Shape(gpu_model="H100", gpus=8, cpus=192, memory_mb=2048 * 1024, gpu_memory_mb=81920)
L40SX4 = Shape(gpu_model="L40S", gpus=4, cpus=48, memory_mb=384 * 1024, gpu_memory_mb=49152)
NOW = 10_000.0


def pool(name: str, price: float, **kw: Any) -> PoolFacts:
    base = PoolFacts(
        name=name,
        provider="sim",
        instance_type="h100x8",
        region="sim-a",
        zone=None,
        spot=False,
        shape=H100X8,
        price_per_hour=price,
        min_nodes=0,
        max_nodes=8,
    )
    return replace(base, **kw)


def gang(job: str, replicas: int = 1, gpus: int = 8, **kw: Any) -> WaitingGang:
    base = WaitingGang(
        job_id=job,
        replicas=replicas,
        demand=Demand(gpus=gpus, gpu_type="H100", cpus=4, memory_mb=1024),
        preemptible=False,
        submitted_at=NOW - 60,
    )
    return replace(base, **kw)


def member(p: str, name: str, **kw: Any) -> PoolMember:
    base = PoolMember(
        pool=p,
        instance=name,
        launched_at=NOW - 3600,
        joined=True,
        ready=True,
        idle_since=None,
    )
    return replace(base, **kw)


def facts(
    pools: Sequence[PoolFacts],
    members: Sequence[PoolMember] = (),
    waiting: Sequence[WaitingGang] = (),
    **kw: Any,
) -> FleetFacts:
    return FleetFacts(tuple(pools), tuple(members), tuple(waiting), **kw)


def grown(plan: FleetPlan) -> dict[str, int]:
    return {g.pool: g.count for g in plan.grow}


def test_the_cheapest_pool_that_fits_grows_by_what_the_gang_needs() -> None:
    plan = decide(facts([pool("a", 98.0), pool("b", 72.0)], waiting=[gang("j", replicas=3)]), NOW)
    assert grown(plan) == {"b": 3}
    assert plan.grow[0].for_jobs == ("j",)
    assert "3 x h100x8 (on-demand, $72.00/h each)" in plan.grow[0].reason
    assert plan.unmet == {}


def test_small_replicas_share_a_node() -> None:
    # 5 replicas of 2 GPUs on 8-GPU nodes: 2 nodes, not 5.
    plan = decide(facts([pool("a", 10.0)], waiting=[gang("j", replicas=5, gpus=2)]), NOW)
    assert grown(plan) == {"a": 2}


def test_spare_room_of_new_nodes_serves_the_next_gang() -> None:
    waiting = [gang("j1", replicas=1, gpus=4), gang("j2", replicas=1, gpus=4, submitted_at=NOW)]
    plan = decide(facts([pool("a", 10.0)], waiting=waiting), NOW)
    assert grown(plan) == {"a": 1}
    assert plan.grow[0].for_jobs == ("j1",)


def test_booting_and_free_ready_nodes_are_used_before_buying() -> None:
    members = [
        member("a", "boot-1", joined=False, ready=False, launched_at=NOW - 30),
        member("a", "free-1", idle_since=NOW - 5, free_gpus=8, free_cpus=192, free_memory_mb=10**6),
    ]
    plan = decide(facts([pool("a", 10.0)], members, [gang("j", replicas=3)]), NOW)
    assert grown(plan) == {"a": 1}  # 2 of 3 replicas fit on what is there


def test_spot_only_for_preemptible_and_first_for_it() -> None:
    pools = [pool("od", 30.0), pool("spot", 40.0, spot=True)]
    plan = decide(facts(pools, waiting=[gang("p", preemptible=True)]), NOW)
    assert grown(plan) == {"spot": 1}  # spot first even where on-demand is cheaper here
    plan = decide(facts(pools, waiting=[gang("n", preemptible=False)]), NOW)
    assert grown(plan) == {"od": 1}
    plan = decide(facts([pool("spot", 1.0, spot=True)], waiting=[gang("n")]), NOW)
    assert plan.grow == ()
    assert "only for preemptible" in plan.unmet["n"]


def test_gpu_model_memory_and_selector_are_respected() -> None:
    pools = [pool("l40", 5.0, instance_type="l40sx4", shape=L40SX4), pool("h100", 90.0)]
    plan = decide(facts(pools, waiting=[gang("h")]), NOW)
    assert grown(plan) == {"h100": 1}
    want_mem = Demand(gpus=1, gpu_type="H100", gpu_min_memory_mb=100_000)
    plan = decide(facts(pools, waiting=[gang("m", demand=want_mem)]), NOW)
    assert plan.grow == ()
    assert "81920Mi of memory, not 100000Mi" in plan.unmet["m"]
    any_gpu = Demand(gpus=1)
    plan = decide(
        facts(pools, waiting=[gang("s", demand=any_gpu, node_selector={"pool": "h100"})]), NOW
    )
    assert grown(plan) == {"h100": 1}
    plan = decide(facts(pools, waiting=[gang("s", demand=any_gpu)]), NOW)
    assert grown(plan) == {"l40": 1}
    plan = decide(
        facts(pools, waiting=[gang("r", demand=any_gpu, node_selector={"region": "sim-b"})]), NOW
    )
    assert "label region=sim-b" in plan.unmet["r"]


def test_node_topology_needs_one_node_that_holds_the_gang() -> None:
    plan = decide(facts([pool("a", 10.0)], waiting=[gang("j", replicas=2, topology="node")]), NOW)
    assert plan.grow == ()
    assert "one node holds 1 replicas, the job needs 2 on one" in plan.unmet["j"]
    assert plan.unmet["j"].startswith("no pool can hold 2 x (")
    # rack: one node unless the pool's nodes share a rack label.
    racked = pool("a", 10.0, labels={"rack": "nvl72-1"})
    plan = decide(facts([racked], waiting=[gang("j", replicas=2, topology="rack")]), NOW)
    assert grown(plan) == {"a": 2}


def test_never_past_max_nodes_and_the_next_pool_is_tried() -> None:
    members = [member("cheap", f"n{i}") for i in range(2)]
    pools = [pool("cheap", 10.0, max_nodes=3), pool("dear", 50.0)]
    plan = decide(facts(pools, members, [gang("j", replicas=2)]), NOW)
    assert grown(plan) == {"dear": 2}
    plan = decide(facts(pools[:1], members, [gang("j", replicas=2)]), NOW)
    assert plan.grow == ()
    assert "at max_nodes 3" in plan.unmet["j"]
    assert plan.unmet["j"].startswith("no pool can grow for")


def test_blocked_pool_is_skipped_for_the_next_cheapest() -> None:
    pools = [
        pool("cheap", 10.0, blocked_until=NOW + 60, blocked_reason="capacity"),
        pool("b", 50.0),
    ]
    assert grown(decide(facts(pools, waiting=[gang("j")]), NOW)) == {"b": 1}
    plan = decide(facts(pools[:1], waiting=[gang("j")]), NOW)
    assert "blocked for 60 s more: capacity" in plan.unmet["j"]
    # Once the block has passed, the cheap pool is used again.
    assert grown(decide(facts(pools, waiting=[gang("j")]), NOW + 61)) == {"cheap": 1}


def test_launch_budget_bounds_a_round() -> None:
    waiting = [gang(f"j{i}", replicas=3, submitted_at=NOW - 100 + i) for i in range(4)]
    plan = decide(
        facts([pool("a", 10.0, max_nodes=100)], waiting=waiting, max_launch_per_round=7), NOW
    )
    assert grown(plan) == {"a": 6}
    assert plan.grow[0].for_jobs == ("j0", "j1")
    assert "1 more new nodes this round" in plan.unmet["j2"]


def test_grow_to_min_nodes() -> None:
    plan = decide(facts([pool("a", 10.0, min_nodes=2)], [member("a", "n0")]), NOW)
    assert grown(plan) == {"a": 1}
    assert "min_nodes 2" in plan.grow[0].reason


def test_idle_release_respects_grace_min_work_and_static() -> None:
    members = [
        member("a", "old", idle_since=NOW - 900),
        member("a", "older", idle_since=NOW - 1200),
        member("a", "fresh", idle_since=NOW - 100),
        member("a", "busy", idle_since=None),
        member("ssh", "host", idle_since=NOW - 99999),
    ]
    pools = [pool("a", 10.0, min_nodes=2), pool("ssh", 0.0, static=True, max_nodes=1)]
    plan = decide(facts(pools, members), NOW)
    # 4 live, min 2: the two past the 600 s grace go, the longest idle first.
    assert [(r.instance, r.reason) for r in plan.release] == [
        ("older", "idle for 1200 s"),
        ("old", "idle for 900 s"),
    ]
    pools[0] = pool("a", 10.0, min_nodes=3)
    assert [r.instance for r in decide(facts(pools, members), NOW).release] == ["older"]


def test_idle_node_a_waiting_gang_can_use_is_kept() -> None:
    free = dict(free_gpus=8, free_cpus=192.0, free_memory_mb=10**6)
    members = [member("a", "idle", idle_since=NOW - 9999, **free)]
    plan = decide(facts([pool("a", 10.0)], members, [gang("j")]), NOW)
    assert plan.release == () and plan.grow == ()


def test_a_node_that_does_not_join_is_released_and_its_pool_blocked() -> None:
    members = [member("cheap", "late", joined=False, ready=False, launched_at=NOW - 700)]
    pools = [pool("cheap", 10.0), pool("dear", 50.0)]
    plan = decide(facts(pools, members, [gang("j")]), NOW)
    assert [(r.instance, r.reason) for r in plan.release] == [("late", "did not join within 600 s")]
    assert plan.block == {"cheap": "node late did not join within 600 s"}
    assert grown(plan) == {"dear": 1}


def test_no_pools_says_how_to_add_one() -> None:
    plan = decide(facts([], waiting=[gang("j")]), NOW)
    assert "corral pool create" in plan.unmet["j"]


def test_unpriced_pool_is_chosen_last() -> None:
    plan = decide(facts([pool("free", 0.0), pool("paid", 99.0)], waiting=[gang("j")]), NOW)
    assert grown(plan) == {"paid": 1}


def test_room_left_on_busy_nodes_is_the_schedulers() -> None:
    # The scheduler could not place the gang on the half-free busy node (it holds it for a
    # reservation, say): the autoscaler does not count on that room.
    half = dict(free_gpus=4, free_cpus=96.0, free_memory_mb=10**6)
    members = [member("a", "busy", idle_since=None, **half)]
    plan = decide(facts([pool("a", 10.0)], members, [gang("j", gpus=4)]), NOW)
    assert grown(plan) == {"a": 1}


def test_higher_priority_gangs_are_served_first_as_the_scheduler_does() -> None:
    waiting = [gang("old-low", submitted_at=NOW - 100), gang("new-high", priority=10)]
    plan = decide(facts([pool("a", 10.0)], waiting=waiting, max_launch_per_round=1), NOW)
    assert plan.grow[0].for_jobs == ("new-high",)
    assert "old-low" in plan.unmet


def test_idle_nodes_above_a_lowered_max_go_at_once() -> None:
    members = [
        member("a", "n1", idle_since=NOW - 10),
        member("a", "n2", idle_since=NOW - 5),
        member("a", "busy"),
    ]
    plan = decide(facts([pool("a", 10.0, max_nodes=1)], members), NOW)
    # 3 live, max 1: both idle ones go (the busy one stays until its work ends).
    assert [r.instance for r in plan.release] == ["n1", "n2"]
    assert "above its max_nodes 1" in plan.release[0].reason


def test_spot_pools_label_their_nodes_and_a_job_may_ask_for_spot() -> None:
    spot = pool("spot", 1.0, spot=True)
    assert pool_labels(spot)["spot"] == "true"
    assert "spot" not in pool_labels(pool("od", 1.0))
    # A non-preemptible job that asks for spot nodes by name may have them.
    plan = decide(facts([spot], waiting=[gang("n", node_selector={"spot": "true"})]), NOW)
    assert grown(plan) == {"spot": 1}


def test_warm_spares_are_kept_ahead_of_demand() -> None:
    free = dict(free_gpus=8, free_cpus=192.0, free_memory_mb=10**6)
    a = pool("a", 10.0, spare_nodes=2)
    # An empty pool buys its spares.
    plan = decide(facts([a]), NOW)
    assert grown(plan) == {"a": 2}
    assert "spare_nodes 2" in plan.grow[0].reason
    # A gang takes one of the two idle spares: one more is bought to replace it.
    members = [member("a", f"s{i}", idle_since=NOW - 9999, **free) for i in range(2)]
    plan = decide(facts([a], members, [gang("j")]), NOW)
    assert grown(plan) == {"a": 1} and plan.release == ()
    # Idle spares past their grace stay; the ones above the spare count go.
    members.append(member("a", "s2", idle_since=NOW - 9999, **free))
    plan = decide(facts([a], members), NOW)
    assert plan.grow == () and [r.instance for r in plan.release] == ["s0"]
    # Booting nodes count as spares; never past max_nodes.
    booting = [member("a", "b0", joined=False, ready=False, launched_at=NOW - 10)]
    assert grown(decide(facts([a], booting), NOW)) == {"a": 1}
    assert decide(facts([replace(a, max_nodes=1)], booting), NOW).grow == ()


def test_a_gone_member_is_released_at_once_and_replaced_without_blocking_its_pool() -> None:
    # A max-1 pool whose one node was reclaimed (spot) while idle: it goes, and the waiting
    # job gets a new node in the same round instead of "at max_nodes 1" forever.
    why = "spot interruption: the instance is reclaimed at 10060"
    gone = member("a", "n0", ready=False, idle_since=NOW - 5, gone=why)
    plan = decide(facts([pool("a", 10.0, max_nodes=1)], [gone], [gang("j")]), NOW)
    assert [(r.instance, r.reason) for r in plan.release] == [("n0", why)]
    assert plan.block == {}
    assert grown(plan) == {"a": 1} and "j" not in plan.unmet
    # Its node deleted by hand while it had work: released all the same, the pool not blocked.
    deleted = member("a", "n0", ready=False, idle_since=None, gone="its node was deleted")
    plan = decide(facts([pool("a", 10.0, min_nodes=1, max_nodes=1)], [deleted]), NOW)
    assert [r.instance for r in plan.release] == ["n0"] and plan.block == {}
    assert grown(plan) == {"a": 1}  # min_nodes holds with a new one


def test_a_cordoned_idle_member_goes_after_the_grace_even_at_min_and_with_no_spares() -> None:
    cordoned = member("a", "n0", ready=False, idle_since=NOW - 100)
    pools = [pool("a", 10.0, min_nodes=1, max_nodes=1)]
    assert decide(facts(pools, [cordoned]), NOW).release == ()  # within the grace
    plan = decide(facts(pools, [replace(cordoned, idle_since=NOW - 700)]), NOW)
    assert [(r.instance, r.reason) for r in plan.release] == [
        ("n0", "not ready and idle for 700 s")
    ]
    assert grown(plan) == {"a": 1}
    # Not ready with work on it: kept (its work runs there).
    assert decide(facts(pools, [replace(cordoned, idle_since=None)]), NOW).release == ()
