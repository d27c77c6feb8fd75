"""Topology: the smallest domain that holds the gang; required and allowed spreads."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import GB200, job, node, running, where, world

from corral.core.placement import Outcome, place


def _racks(plan, nodes) -> set[str]:  # type: ignore[no-untyped-def]
    rack = {n.id: n.topology[3] for n in nodes}
    return {rack[n] for ns in where(plan).values() for n in ns}


def test_a_gang_that_fits_one_node_stays_on_one_node() -> None:
    plan = place(world([node("a"), node("b")], [job("g", 4, 2)]), 0.0)
    assert where(plan) == {"g": ["a", "a"]}


def test_a_gang_goes_to_one_rack_rather_than_across_racks() -> None:
    nodes = [node("a1", rack="ra"), node("b1", rack="rb"), node("b2", rack="rb")]
    plan = place(world(nodes, [job("g", 8, 2)]), 0.0)
    assert sorted(where(plan)["g"]) == ["b1", "b2"]


def test_the_tightest_rack_that_holds_the_gang_is_chosen() -> None:
    nodes = [node(f"a{i}", rack="ra") for i in range(4)] + [
        node(f"b{i}", rack="rb") for i in range(2)
    ]
    plan = place(world(nodes, [job("g", 8, 2)]), 0.0)
    assert sorted(where(plan)["g"]) == ["b0", "b1"]


def test_across_racks_a_gang_spans_as_few_racks_as_it_can() -> None:
    # Racks with 3, 2 and 1 free nodes; a gang of 4 takes the 3-rack and the 1-rack.
    nodes = (
        [node(f"a{i}", rack="ra") for i in range(3)]
        + [node(f"b{i}", rack="rb") for i in range(2)]
        + [node("c0", rack="rc")]
    )
    plan = place(world(nodes, [job("g", 8, 4)]), 0.0)
    assert _racks(plan, nodes) == {"ra", "rc"}


@pytest.mark.parametrize(
    ("topology", "outcome"),
    [
        (None, Outcome.PLACED),  # default: one region
        ("zone", Outcome.UNRESOLVABLE),
        ("rack", Outcome.UNRESOLVABLE),
        ("node", Outcome.UNRESOLVABLE),
    ],
)
def test_required_domain(topology: str | None, outcome: Outcome) -> None:
    nodes = [node("a", zone="z1", rack="r1"), node("b", zone="z2", rack="r2")]
    plan = place(world(nodes, [job("g", 8, 2, topology=topology)]), 0.0)
    assert plan.outcome("g") == outcome
    if outcome == Outcome.UNRESOLVABLE:
        assert f"in one {topology}; the largest {topology} holds 1" in plan.pending_reasons["g"]


def test_a_required_rack_busy_now_may_fit_later() -> None:
    nodes = [node("a1", rack="ra"), node("a2", rack="ra"), node("b1", rack="rb")]
    busy = running("busy", [("a2", [0])], preemptible=False)
    plan = place(world(nodes, [job("g", 8, 2, topology="rack")], [busy]), 0.0)
    assert plan.outcome("g") == Outcome.UNSCHEDULABLE
    assert plan.pending_reasons["g"].startswith("needs 2× 8 GPUs in one rack; the freest rack has")


@pytest.mark.parametrize(
    ("topology", "outcome"),
    [
        (None, Outcome.UNRESOLVABLE),  # never across regions by default
        ("region", Outcome.UNRESOLVABLE),
        ("provider", Outcome.PLACED),
        ("any", Outcome.PLACED),
    ],
)
def test_never_across_regions_unless_allowed(topology: str | None, outcome: Outcome) -> None:
    nodes = [node("a", region="eu"), node("b", region="us")]
    plan = place(world(nodes, [job("g", 8, 2, topology=topology)]), 0.0)
    assert plan.outcome("g") == outcome


def test_across_providers_only_with_any() -> None:
    nodes = [node("a", provider="aws"), node("b", provider="ssh")]
    assert place(world(nodes, [job("g", 8, 2, topology="provider")]), 0.0).outcome("g") == (
        Outcome.UNRESOLVABLE
    )
    assert place(world(nodes, [job("g", 8, 2, topology="any")]), 0.0).outcome("g") == Outcome.PLACED


def test_nodes_without_topology_take_gangs_but_claim_no_rack() -> None:
    nodes = [node("a", flat=True), node("b", flat=True)]
    assert place(world(nodes, [job("g", 8, 2)]), 0.0).outcome("g") == Outcome.PLACED
    plan = place(world(nodes, [job("g", 8, 2, topology="rack")]), 0.0)
    assert plan.outcome("g") == Outcome.UNRESOLVABLE


def test_an_nvl72_rack_holds_a_16_node_gang_whole() -> None:
    nodes = [node(f"n{r}-{i}", 4, GB200, rack=f"nvl{r}") for r in range(2) for i in range(18)]
    busy = running(
        "busy", [("n0-0", [0, 1, 2, 3]), ("n0-1", [0]), ("n0-2", [0])], preemptible=False
    )
    plan = place(world(nodes, [job("g", 4, 16, gpu_type="GB200", topology="rack")], [busy]), 0.0)
    # Rack nvl0 has 15 whole nodes left; nvl1 has 18: only nvl1 holds 16 replicas.
    assert _racks(plan, nodes) == {"nvl1"}
    assert len(where(plan)["g"]) == 16
