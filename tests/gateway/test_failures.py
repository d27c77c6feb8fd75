"""A replica killed mid-load, and a rolling update under constant streaming load."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateway.conftest import Procs
from gateway.harness import endpoint, sse_events
from support.cluster import wait_for


def test_killed_replica_loses_only_the_requests_it_had_started(procs: Procs) -> None:
    a = procs.replica("a").wait_ready()
    b = procs.replica("b").wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", a.route(), b.route())))
    url = f"{gw.url}/ep/chat/v1/chat/completions"

    def post(rid: str, delay: float = 0.0) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            headers = {"x-request-id": rid, "x-mock-delay": str(delay)}
            return client.post(url, json={"max_tokens": 1}, headers=headers)

    # Warm both replicas' pooled connections, so the kill also leaves stale ones behind.
    with ThreadPoolExecutor(8) as pool:
        assert {r.status_code for r in pool.map(post, [f"w{i}" for i in range(16)])} == {200}

    with ThreadPoolExecutor(40) as pool:
        slow = {f"slow{i}": pool.submit(post, f"slow{i}", 2.0) for i in range(4)}
        wait_for("slow requests started on a", lambda: len(a.ids("recv") & set(slow)) == 2)
        wait_for("slow requests started on b", lambda: len(b.ids("recv") & set(slow)) == 2)
        a.kill()
        # The route table still lists `a` as ready: the gateway finds out by itself.
        burst = {f"burst{i}": pool.submit(post, f"burst{i}") for i in range(30)}
        results = {rid: f.result().status_code for rid, f in {**slow, **burst}.items()}

    started_on_a = a.ids("recv")
    failed = {rid for rid, status in results.items() if status != 200}
    # Only requests that had reached `a` may fail; none of them is retried elsewhere.
    assert failed == started_on_a & set(slow)
    assert all(results[rid] == 200 for rid in burst)
    assert not b.ids("recv") & failed
    assert gw.metric("corral_gateway_retries_total", "chat") >= 1


def test_rolling_update_under_streaming_load_drops_nothing(procs: Procs) -> None:
    chunks = 20
    old = [procs.replica(f"v1-{i}", "--chunk-interval", "0.02").wait_ready() for i in range(2)]
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", *(r.route() for r in old))))

    stop = threading.Event()
    outcomes: list[tuple[int, list[str]]] = []
    lock = threading.Lock()

    def stream_forever(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not stop.is_set():
                body = b""
                with client.stream(
                    "POST",
                    f"{gw.url}/ep/chat/v1/chat/completions",
                    headers={"x-request-id": f"s{n}-{i}"},
                    json={"stream": True, "max_tokens": chunks},
                ) as response:
                    for piece in response.iter_raw():
                        body += piece
                with lock:
                    outcomes.append((response.status_code, sse_events(body)))
                i += 1

    threads = [threading.Thread(target=stream_forever, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for("load on the old replicas", lambda: len(outcomes) >= 6)
        new = [procs.replica(f"v2-{i}", "--chunk-interval", "0.02") for i in range(2)]
        # New replicas start (not yet ready: no traffic), become ready, then the old drain.
        plane.set(endpoint("chat", *(r.route() for r in old), *(r.route("starting") for r in new)))
        for replica in new:
            replica.wait_ready()
        plane.set(endpoint("chat", *(r.route() for r in old + new)))
        gw.wait_version(
            plane.set(
                endpoint(
                    "chat",
                    *(r.route("draining") for r in old),
                    *(r.route() for r in new),
                )
            )
        )
        drained_from = len(outcomes)

        def old_idle() -> bool:
            reps = {r["id"]: r for r in gw.endpoint_load("chat")["replicas"]}
            return all(reps[r.id]["in_flight"] == 0 for r in old)

        wait_for("old replicas drained", old_idle)
        for replica in old:
            replica.kill()
        gw.wait_version(plane.set(endpoint("chat", *(r.route() for r in new))))
        wait_for("load on the new replicas", lambda: len(outcomes) >= drained_from + 12)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    bad = [o for o in outcomes if o[0] != 200]
    truncated = [o for o in outcomes if len(o[1]) != chunks + 1 or o[1][-1] != "[DONE]"]
    assert not bad, bad[:3]
    assert not truncated, truncated[:1]
    for _, events in outcomes:
        assert [json.loads(e)["seq"] for e in events[:-1]] == list(range(chunks))
    assert all(r.ids("done") for r in new)
    # No stream was cut on an old replica: each one it started, it finished.
    for replica in old:
        streams = {rid for rid in replica.ids("recv") if rid.startswith("s")}
        assert streams and streams <= replica.ids("done")
        assert not replica.ids("cancel")


def test_drain_timeout_cuts_a_stream_that_outlives_it(procs: Procs) -> None:
    replica = procs.replica("slow", "--chunk-interval", "0.05").wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", replica.route(), drain_timeout_s=0.5)))
    received = b""
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{gw.url}/ep/chat/v1/chat/completions",
            headers={"x-request-id": "long"},
            json={"stream": True, "max_tokens": 400},  # 20 s of chunks
        ) as response,
    ):
        pieces = response.iter_raw()
        received += next(pieces)
        plane.set(endpoint("chat", replica.route("draining"), drain_timeout_s=0.5))
        try:
            for piece in pieces:
                received += piece
        except httpx.HTTPError:
            pass  # cut: the client sees a broken stream, not a clean short one
    assert b"[DONE]" not in received
    assert 2 < received.count(b"data: ") < 100
    wait_for("the replica sees the cut", lambda: "long" in replica.ids("cancel"), timeout=5)
