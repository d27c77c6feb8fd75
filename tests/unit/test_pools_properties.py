"""Invariants of the fleet autoscaler's decision on random fleets and queues (Hypothesis).

- a pool grows only up to max_nodes, never while blocked, never when static; one round
  launches at most max_launch_per_round nodes;
- releases: never a node with work, never a static pool's, never one already releasing,
  never the same twice; idle releases past the grace period (or above a lowered max),
  never below min_nodes; a node released for not
  joining had not joined within join_timeout_s; a member whose machine is gone is
  always released, and only late joins rest a pool;
- warm spares (spare_nodes) within the same bounds;
- spot nodes only for preemptible gangs; every gang nodes are bought for fits there;
- a gang is either given nodes or room, or told why not, never both;
- alone in an empty fleet, a gang gets the cheapest pool that holds it (spot first
  for preemptible work);
- the plan does not depend on the order of pools, members or waiting gangs.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

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
from corral.core.pools_fit import mismatch, one_node, per_node
from corral.providers.base import Shape

NOW = 50_000.0
SHAPES = {
    "h100x8": Shape("H100", 8, 192, 2_097_152, 81_920),
    "a100x8": Shape("A100", 8, 96, 1_179_648, 40_960),
    "l40sx4": Shape("L40S", 4, 48, 393_216, 49_152),
    "cpu16": Shape(None, 0, 16, 65_536),
}


@st.composite
def pools(draw: st.DrawFn) -> list[PoolFacts]:
    out = []
    for i in range(draw(st.integers(0, 5))):
        itype = draw(st.sampled_from(sorted(SHAPES)))
        lo = draw(st.integers(0, 2))
        blocked = draw(st.sampled_from([None, None, NOW - 1, NOW + 100]))
        out.append(
            PoolFacts(
                name=f"p{i}",
                provider=draw(st.sampled_from(["sim", "aws"])),
                instance_type=itype,
                region=draw(st.sampled_from(["sim-a", "sim-b"])),
                zone=None,
                spot=draw(st.booleans()),
                shape=SHAPES[itype],
                price_per_hour=draw(st.sampled_from([0.0, 4.0, 13.0, 35.0, 40.0, 98.0])),
                min_nodes=lo,
                max_nodes=lo + draw(st.integers(0, 6)),
                labels=draw(st.sampled_from([{}, {"rack": "r1"}, {"team": "x"}])),
                static=draw(st.booleans()) and draw(st.booleans()),
                idle_grace_s=draw(st.sampled_from([0.0, 300.0, 600.0])),
                spare_nodes=draw(st.sampled_from([0, 0, 1, 2])),
                join_timeout_s=600.0,
                blocked_until=blocked,
                blocked_reason="capacity" if blocked else None,
            )
        )
    return out


@st.composite
def members(draw: st.DrawFn, ps: list[PoolFacts]) -> list[PoolMember]:
    out = []
    for p in ps:
        for j in range(draw(st.integers(0, 4))):
            joined = draw(st.booleans())
            idle = draw(st.sampled_from([None, NOW - 10, NOW - 1000]))
            free = draw(st.integers(0, p.shape.gpus)) if joined else 0
            ready = joined and draw(st.booleans())
            gone = draw(st.sampled_from([None, None, "spot interruption: reclaimed"]))
            out.append(
                PoolMember(
                    pool=p.name,
                    instance=f"{p.name}-n{j}",
                    launched_at=NOW - draw(st.sampled_from([10.0, 700.0, 5000.0])),
                    joined=joined,
                    ready=ready,
                    idle_since=idle if joined else None,
                    free_gpus=free,
                    free_cpus=p.shape.cpus if free else 0.0,
                    free_memory_mb=p.shape.memory_mb if free else 0,
                    releasing=draw(st.booleans()) and draw(st.booleans()),
                    gone=None if ready else gone,
                )
            )
    return out


@st.composite
def gangs(draw: st.DrawFn) -> list[WaitingGang]:
    out = []
    for i in range(draw(st.integers(0, 6))):
        gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
        out.append(
            WaitingGang(
                job_id=f"j{i}",
                replicas=draw(st.integers(1, 6)),
                demand=Demand(
                    gpus=gpus,
                    gpu_type=draw(st.sampled_from([None, "H100", "A100", "L40S"]))
                    if gpus
                    else None,
                    gpu_min_memory_mb=draw(st.sampled_from([None, None, 45_000])) if gpus else None,
                    cpus=draw(st.sampled_from([0.0, 1.0, 8.0])),
                    memory_mb=draw(st.sampled_from([0, 1024])),
                ),
                preemptible=draw(st.booleans()),
                submitted_at=NOW - draw(st.integers(0, 3)),
                topology=draw(st.sampled_from([None, "node", "rack", "zone", "any"])),
                node_selector=draw(st.sampled_from([{}, {"team": "x"}, {"region": "sim-b"}])),
            )
        )
    return out


@st.composite
def fleets(draw: st.DrawFn) -> FleetFacts:
    ps = draw(pools())
    return FleetFacts(
        pools=tuple(ps),
        members=tuple(draw(members(ps))),
        waiting=tuple(draw(gangs())),
        max_launch_per_round=draw(st.sampled_from([1, 4, 16])),
    )


def _check(facts: FleetFacts, plan: FleetPlan) -> None:
    by_pool = {p.name: p for p in facts.pools}
    by_member = {(m.pool, m.instance): m for m in facts.members}
    gangs_by_id = {g.job_id: g for g in facts.waiting}
    assert sum(g.count for g in plan.grow) <= facts.max_launch_per_round

    released = [(r.pool, r.instance) for r in plan.release]
    assert len(released) == len(set(released))
    for m in facts.members:
        # A member whose machine is gone is always given back (unless a static host's).
        if m.gone and not m.releasing and not by_pool[m.pool].static:
            assert (m.pool, m.instance) in released
    for r in plan.release:
        m = by_member[(r.pool, r.instance)]
        p = by_pool[r.pool]
        assert not p.static and not m.releasing
        if m.gone:
            assert r.reason == m.gone  # and it does not rest its pool (below)
        elif m.joined:
            assert m.idle_since is not None
            live = sum(1 for x in facts.members if x.pool == p.name and not x.releasing)
            assert NOW - m.idle_since >= p.idle_grace_s or live > p.max_nodes
        else:
            assert NOW - m.launched_at >= p.join_timeout_s
            assert r.pool in plan.block
    for name in plan.block:  # only a member that did not join in time rests its pool
        assert any(
            by_member[(r.pool, r.instance)].gone is None
            and not by_member[(r.pool, r.instance)].joined
            for r in plan.release
            if r.pool == name
        )

    for p in facts.pools:
        before = sum(1 for m in facts.members if m.pool == p.name and not m.releasing)
        gone = [r for r in plan.release if r.pool == p.name]
        grow = sum(g.count for g in plan.grow if g.pool == p.name)
        after = before - len(gone) + grow
        if grow:
            assert not p.static
            assert p.blocked_until is None or p.blocked_until <= NOW
            assert p.name not in plan.block
            assert after <= p.max_nodes
        if any(r.reason.startswith("idle") for r in gone):
            assert after >= p.min_nodes

    given_nodes: set[str] = set()
    for g in plan.grow:
        p = by_pool[g.pool]
        for job in g.for_jobs:
            assert job not in given_nodes
            given_nodes.add(job)
            gang = gangs_by_id[job]
            assert gang.preemptible or not p.spot or gang.node_selector.get("spot") == "true"
            assert mismatch(p.shape, pool_labels(p), gang.demand, gang.node_selector) is None
            if one_node(gang.topology, pool_labels(p)):
                assert per_node(p.shape, gang.demand) >= gang.replicas
    assert not given_nodes & set(plan.unmet)
    assert set(plan.unmet) <= set(gangs_by_id)


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_invariants(facts: FleetFacts) -> None:
    _check(facts, decide(facts, NOW))


@settings(max_examples=200, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_order_does_not_matter(facts: FleetFacts, rnd: random.Random) -> None:
    def shuffled(xs: tuple[object, ...]) -> tuple[object, ...]:
        out = list(xs)
        rnd.shuffle(out)
        return tuple(out)

    other = replace(
        facts,
        pools=shuffled(facts.pools),
        members=shuffled(facts.members),
        waiting=shuffled(facts.waiting),
    )
    assert decide(other, NOW) == decide(facts, NOW)


@settings(max_examples=300, deadline=None)
@given(pools(), gangs())
def test_a_lone_gang_gets_the_cheapest_pool_that_holds_it(
    ps: list[PoolFacts], gs: list[WaitingGang]
) -> None:
    if not gs:
        return
    gang = gs[0]
    open_pools = [
        replace(p, static=False, blocked_until=None, min_nodes=0, max_nodes=100, spare_nodes=0)
        for p in ps
    ]
    plan = decide(FleetFacts(tuple(open_pools), (), (gang,), max_launch_per_round=100), NOW)

    def cost(p: PoolFacts) -> tuple[int, bool, float] | None:
        """(spot rank, unpriced, price of the nodes) when p can hold the gang alone."""
        if p.spot and not gang.preemptible:
            return None
        if mismatch(p.shape, pool_labels(p), gang.demand, gang.node_selector) is not None:
            return None
        k = per_node(p.shape, gang.demand)
        if one_node(gang.topology, pool_labels(p)):
            n = 1 if k >= gang.replicas else 0
        else:
            n = -(-gang.replicas // k)
        if n == 0:
            return None
        spot_rank = 0 if gang.preemptible and p.spot else 1
        return (spot_rank, p.price_per_hour <= 0, n * p.price_per_hour)

    options = [c for p in open_pools if (c := cost(p)) is not None]
    if not options:
        assert plan.grow == () and gang.job_id in plan.unmet
        return
    assert len(plan.grow) == 1 and plan.grow[0].for_jobs == (gang.job_id,)
    chosen = cost(next(p for p in open_pools if p.name == plan.grow[0].pool))
    assert chosen == min(options)
