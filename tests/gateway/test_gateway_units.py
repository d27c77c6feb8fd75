"""The gateway's decisions in-process: balancing, affinity, load signals, table changes, wakes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from corral.gateway import Gateway, StaticRouteSource, balance
from corral.gateway.signals import LoadTracker, Metrics
from corral.gateway.table import RoutingTable
from corral.wire.gateway import EndpointRoute, ReplicaRoute, RouteTable, Wake


@dataclass(eq=False)
class R:
    id: str
    in_flight: int = 0


def test_least_outstanding_prefers_the_idlest_and_rotates_ties() -> None:
    replicas = [R("a", 3), R("b", 1), R("c", 1)]
    assert balance.least_outstanding(replicas, 0) is replicas[1]
    assert balance.least_outstanding(replicas, 2) is replicas[2]
    assert balance.least_outstanding([], 0) is None


def test_affinity_sticks_then_gives_way_when_the_replica_saturates() -> None:
    replicas = [R("a"), R("b"), R("c"), R("d")]
    chosen = {balance.pick(replicas, t, b"session-1", cap=0) for t in range(10)}
    assert len(chosen) == 1
    home = chosen.pop()
    assert home is not None
    # Keys spread over replicas.
    homes = {balance.pick(replicas, 0, f"k{i}".encode(), cap=0).id for i in range(64)}  # type: ignore[union-attr]
    assert homes == {"a", "b", "c", "d"}
    # Loaded beyond its bounded share, the home replica is passed over.
    home.in_flight = 5
    assert balance.pick(replicas, 0, b"session-1", cap=0) is not home
    # With an explicit cap, it keeps the key up to the cap.
    home.in_flight = 2
    for r in replicas:
        if r is not home:
            r.in_flight = 2
    assert balance.pick(replicas, 0, b"session-1", cap=3) is home
    home.in_flight = 3
    assert balance.pick(replicas, 0, b"session-1", cap=3) is not home


def test_mean_in_flight_is_time_weighted() -> None:
    load = LoadTracker(100.0)
    load.arrive(100.0)
    load.arrive(101.0)
    load.finish(103.0)
    assert load.mean_in_flight(103.0, 2.0) == pytest.approx(2.0)
    assert load.mean_in_flight(110.0, 10.0) == pytest.approx((1 * 1 + 2 * 2 + 1 * 7) / 10)
    load.finish(110.0)
    assert load.mean_in_flight(500.0, 60.0) == 0.0  # long idle skips ahead


def _table(version: int, *replicas: ReplicaRoute, **options: object) -> RouteTable:
    route = EndpointRoute(name="e", workspace="w", replicas=list(replicas), **options)  # type: ignore[arg-type]
    return RouteTable(version=version, endpoints=[route])


def test_routing_table_drains_and_forgets_replicas() -> None:
    now = [0.0]
    table = RoutingTable(Metrics(), clock=lambda: now[0])
    a = ReplicaRoute(id="a", url="http://127.0.0.1:1", state="ready")
    b = ReplicaRoute(id="b", url="http://127.0.0.1:2", state="starting")
    table.apply(_table(1, a, b, drain_timeout_s=30))
    endpoint = table.endpoints["e"]
    assert [r.id for r in endpoint.ready] == ["a"]
    assert endpoint.choose(0.0, None).id == "a"  # type: ignore[union-attr]

    draining, ready = (
        a.model_copy(update={"state": "draining"}),
        b.model_copy(update={"state": "ready"}),
    )
    table.apply(_table(2, draining, ready, drain_timeout_s=30))
    assert [r.id for r in endpoint.ready] == ["b"]
    assert endpoint.replicas["a"].drain_deadline == 30.0
    # A replica leaving the table is kept, draining, while anything of its is open.
    endpoint.replicas["a"].active.add(object())  # type: ignore[arg-type]
    table.apply(_table(3, b.model_copy(update={"state": "ready"}), drain_timeout_s=30))
    assert endpoint.replicas["a"].gone
    table.collect()
    assert "a" in endpoint.replicas
    now[0] = 31.0
    assert [r.id for _, r in table.expired_replicas(now[0])] == ["a"]
    endpoint.replicas["a"].active.clear()
    table.collect()
    assert "a" not in endpoint.replicas


def test_a_draining_replica_is_used_only_when_none_is_ready() -> None:
    table = RoutingTable(Metrics())
    a = ReplicaRoute(id="a", url="http://127.0.0.1:1", state="draining")
    table.apply(_table(1, a))
    endpoint = table.endpoints["e"]
    assert endpoint.ready == []
    assert endpoint.choose(0.0, None).id == "a"  # type: ignore[union-attr]


def test_bad_replica_url_is_refused() -> None:
    table = RoutingTable(Metrics())
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        table.apply(_table(1, ReplicaRoute(id="x", url="ftp://h", state="ready")))


def test_each_scale_from_zero_episode_wakes_at_once() -> None:
    """A second trip to zero must not be muted by the rate limit of the first one's wakes."""

    async def scenario() -> list[Wake]:
        source = StaticRouteSource(_table(1))
        gateway = Gateway(source)
        await gateway.start("127.0.0.1", 0)
        try:
            await gateway.wait_for_routes(1)
            endpoint = gateway.table.endpoints["e"]
            gateway._wake(endpoint)
            gateway._wake(endpoint)  # repeated within the second: muted
            ready = ReplicaRoute(id="a", url="http://127.0.0.1:1", state="ready")
            source.set(_table(2, ready))
            await gateway.wait_for_routes(2)
            source.set(_table(3))
            await gateway.wait_for_routes(3)
            gateway._wake(endpoint)  # a new episode: at once
            for _ in range(100):
                if len(source.wakes) >= 2:
                    break
                await asyncio.sleep(0.01)
            return source.wakes
        finally:
            await gateway.stop()

    wakes = asyncio.run(scenario())
    assert [w.endpoint for w in wakes] == ["e", "e"]


def test_public_surface() -> None:
    import corral.gateway
    import corral.serve

    assert set(corral.gateway.__all__) == {
        "Gateway",
        "HttpRouteSource",
        "RouteSource",
        "StaticRouteSource",
        "run_gateway",
    }
    assert set(corral.serve.__all__) == {
        "BadRequest",
        "build_app",
        "handler",
        "load_target",
        "serve_app",
        "setup",
    }
