"""The endpoints' load history (server/load_history.py) and how LoadBoard feeds it."""

from __future__ import annotations

import math

from corral.server.load_history import WIDTH, LoadHistory, Ring, Sample
from corral.server.loads import LoadBoard
from corral.wire.gateway import EndpointLoad, GatewayLoad, ReplicaLoad

WS = "default"


def endpoint(
    name: str = "chat",
    arrivals: int = 0,
    *,
    in_flight: float = 0.0,
    held: int = 0,
    p50: float | None = None,
    p99: float | None = None,
    ready: int = 1,
    workspace: str = WS,
) -> EndpointLoad:
    return EndpointLoad(
        name=name,
        workspace=workspace,
        in_flight=int(in_flight),
        held=held,
        arrivals=arrivals,
        completed=arrivals,
        rejected=0,
        mean_in_flight=in_flight,
        window_s=1.0,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        replicas=[ReplicaLoad(id=f"r{i}", state="ready", in_flight=0) for i in range(ready)]
        + [ReplicaLoad(id="s", state="starting", in_flight=0)],
    )


def report(gateway: str, *endpoints: EndpointLoad) -> GatewayLoad:
    return GatewayLoad(gateway=gateway, route_version=1, endpoints=list(endpoints))


def test_rps_is_the_arrivals_counters_growth_over_the_time_between_samples() -> None:
    board = LoadBoard()
    board.report(report("gw", endpoint(arrivals=100)), 10.5)
    board.report(report("gw", endpoint(arrivals=130, p50=4.0, p99=9.0)), 11.5)
    board.report(report("gw", endpoint(arrivals=130, p50=4.0, p99=9.0)), 13.5)
    first, second, third = board.samples(WS, "chat", 0)
    assert first.rps is None  # a baseline: the counter's past is not this second's load
    assert second.rps == 30.0 and (second.p50_ms, second.p99_ms) == (4.0, 9.0)
    # No request for two seconds: 0 rps, and no latency drawn from old requests.
    assert third.rps == 0.0 and third.p50_ms is None and third.p99_ms is None
    assert [s.t for s in (first, second, third)] == [10.5, 11.5, 13.5]


def test_one_sample_a_second_however_many_reports() -> None:
    board = LoadBoard()
    for i in range(10):
        board.report(report("gw", endpoint(arrivals=i)), 20.0 + i * 0.25)
    assert [s.t for s in board.samples(WS, "chat", 0)] == [20.0, 21.0, 22.0]


def test_a_counter_that_went_down_counts_from_zero() -> None:
    board = LoadBoard()
    board.report(report("gw", endpoint(arrivals=500)), 1.0)
    board.report(report("gw", endpoint(arrivals=520)), 2.0)
    board.report(report("gw", endpoint(arrivals=7)), 3.0)  # the gateway restarted
    assert [s.rps for s in board.samples(WS, "chat", 0)] == [None, 20.0, 7.0]


def test_two_gateways_add_up_and_latency_is_the_worst_that_saw_requests() -> None:
    board = LoadBoard()
    board.report(report("a", endpoint(arrivals=10, in_flight=1.0)), 1.2)
    board.report(report("b", endpoint(arrivals=50, in_flight=2.0)), 1.7)
    board.report(report("a", endpoint(arrivals=20, in_flight=1.5, p50=3.0, p99=50.0)), 2.2)
    board.report(report("b", endpoint(arrivals=55, in_flight=0.5, p50=8.0, p99=20.0)), 2.7)
    board.report(report("a", endpoint(arrivals=30, in_flight=1.5, p50=3.0, p99=50.0)), 3.2)
    b_idle = endpoint(arrivals=55, in_flight=0.0, held=2, p50=99.0, p99=999.0, ready=3)
    board.report(report("b", b_idle), 3.7)
    board.report(report("a", endpoint(arrivals=40, p50=5.0, p99=10.0)), 4.2)
    samples = board.samples(WS, "chat", 0)
    assert [s.t for s in samples] == [1.2, 2.2, 3.2, 4.2]
    # At 1.2 only a's baseline; b joined at 1.7 (a baseline too): nothing counted yet.
    assert samples[0].rps is None
    assert samples[1].rps == 10.0  # a: +10; b's first report was its baseline
    assert samples[1].in_flight == 3.5  # a's 1.5 + b's 2.0 (each gateway's latest)
    assert samples[2].rps == 15.0  # a: +10, b: +5 (at 2.7)
    assert (samples[2].p50_ms, samples[2].p99_ms) == (8.0, 50.0)  # worst of each
    # b had no request since: its stale percentiles (99, 999) are not drawn.
    assert samples[3].rps == 10.0 and (samples[3].p50_ms, samples[3].p99_ms) == (5.0, 10.0)
    assert samples[3].held == 2 and samples[3].ready == 3


def test_a_stale_gateway_is_dropped_and_starts_from_a_baseline_when_back() -> None:
    board = LoadBoard()
    board.report(report("a", endpoint(arrivals=0)), 1.0)
    board.report(report("b", endpoint(arrivals=100, in_flight=4.0)), 1.5)
    board.report(report("a", endpoint(arrivals=1)), 2.0)
    # b says nothing for more than 5 s: its last report no longer counts.
    board.report(report("a", endpoint(arrivals=2)), 8.0)
    late = board.samples(WS, "chat", 8.0)[0]
    assert late.in_flight == 0.0 and late.rps is not None
    assert late.rps == round(1 / 6.0, 3)  # a's one request in the 6 s since its last
    # b is back with a counter that grew while away: a baseline, not a burst.
    board.report(report("b", endpoint(arrivals=900)), 8.5)
    board.report(report("a", endpoint(arrivals=2)), 9.0)
    assert board.samples(WS, "chat", 9.0)[0].rps == 0.0


def test_taking_for_the_autoscaler_and_the_history_do_not_disturb_each_other() -> None:
    board = LoadBoard()
    board.report(report("gw", endpoint(arrivals=10)), 1.0)
    assert board.take(WS, "chat", 1.0).arrivals == 0  # the autoscaler's own baseline
    board.report(report("gw", endpoint(arrivals=25)), 2.0)
    board.report(report("gw", endpoint(arrivals=40)), 3.0)
    assert board.take(WS, "chat", 3.0).arrivals == 30
    assert [s.rps for s in board.samples(WS, "chat", 0)] == [None, 15.0, 15.0]
    board.report(report("gw", endpoint(arrivals=41)), 4.0)
    assert board.take(WS, "chat", 4.0).arrivals == 1


def test_the_ring_is_bounded_and_keeps_the_newest() -> None:
    history = LoadHistory(capacity=5)
    for i in range(12):
        history.record({"gw": (float(i), report("gw", endpoint(arrivals=i)))}, float(i))
    kept = history.samples((WS, "chat"))
    assert [s.t for s in kept] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert all(s.rps == 1.0 for s in kept)
    ring = history.rings[(WS, "chat")]
    assert ring.bytes == 5 * WIDTH * 8


def test_endpoints_are_bounded_and_the_quietest_is_forgotten() -> None:
    history = LoadHistory(max_endpoints=2)
    history.record({"gw": (0.0, report("gw", endpoint("a"), endpoint("b")))}, 0.0)
    history.record({"gw": (1.0, report("gw", endpoint("a", 5), endpoint("b")))}, 1.0)
    history.record({"gw": (2.0, report("gw", endpoint("a", 5), endpoint("c")))}, 2.0)
    assert set(history.rings) == {(WS, "a"), (WS, "c")}  # b was idle: it went
    assert history.memory_bound() == 2 * 900 * WIDTH * 8


def test_an_endpoint_the_store_no_longer_has_is_forgotten() -> None:
    history = LoadHistory()
    gw = report("gw", endpoint("a"), endpoint("b"))
    history.set_desired({(WS, "a"): 2, (WS, "b"): 1}, 0.5)
    history.record({"gw": (1.0, gw)}, 1.0)
    assert history.samples((WS, "a"))[0].desired == 2
    history.set_desired({(WS, "a"): 3}, 1.5)  # b was deleted
    assert set(history.rings) == {(WS, "a")}
    assert not any(key[2] == "b" for key in history._seen)
    history.record({"gw": (2.0, report("gw", endpoint("a")))}, 2.0)
    assert [s.desired for s in history.samples((WS, "a"))] == [2, 3]
    # The store's counts grow old (no read for longer than a gateway lives): not drawn.
    history.record({"gw": (9.0, report("gw", endpoint("a")))}, 9.0)
    assert history.samples((WS, "a"))[-1].desired is None


def test_an_endpoint_nobody_reports_for_a_whole_window_is_dropped() -> None:
    history = LoadHistory(capacity=10)
    history.record({"gw": (0.0, report("gw", endpoint("a"), endpoint("b")))}, 0.0)
    for t in range(1, 12):
        history.record({"gw": (float(t), report("gw", endpoint("a")))}, float(t))
    assert set(history.rings) == {(WS, "a")}


def test_desired_counts_are_read_at_most_once_a_second_through_the_board() -> None:
    board = LoadBoard()
    reads: list[int] = []

    def desired() -> dict[tuple[str, str], int]:
        reads.append(1)
        return {(WS, "chat"): 4}

    for i in range(8):
        board.report(report("gw", endpoint(arrivals=i)), 1.0 + i * 0.25, desired)
    assert len(reads) == 2
    assert {s.desired for s in board.samples(WS, "chat", 0)} == {4}


def test_another_workspaces_endpoint_of_the_same_name_is_its_own() -> None:
    board = LoadBoard()
    ours, theirs = endpoint(arrivals=0), endpoint(arrivals=0, workspace="other")
    board.report(report("gw", ours, theirs), 1.0)
    ours, theirs = endpoint(arrivals=3), endpoint(arrivals=70, workspace="other")
    board.report(report("gw", ours, theirs), 2.0)
    assert board.samples(WS, "chat", 0)[-1].rps == 3.0
    assert board.samples("other", "chat", 0)[-1].rps == 70.0


def test_a_ring_round_trips_a_sample_with_nones() -> None:
    ring = Ring(3, 0.0)
    sample = Sample(5.0, None, None, 2.5, 0.25, 1, 2, None)
    ring.append(sample)
    assert ring.samples() == [sample]
    assert ring.last_busy == 5.0  # a request in flight
    assert math.isinf(Ring(3, 0.0).last_busy)
