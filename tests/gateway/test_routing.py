"""Routing through a real gateway process: paths, Host names, auth, errors, streaming."""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import httpx

from gateway.conftest import Procs
from gateway.harness import endpoint, sse_events
from support.cluster import wait_for


def test_path_and_host_routing_auth_and_errors(procs: Procs) -> None:
    a = procs.replica("a").wait_ready()
    b = procs.replica("b").wait_ready()
    plane = procs.plane(domain="models.test")
    token = "crl_secret-for-b"
    version = plane.set(
        endpoint("chat", a.route()),
        endpoint(
            "private",
            b.route(),
            auth="endpoint",
            token_sha256=[hashlib.sha256(token.encode()).hexdigest()],
        ),
    )
    gw = procs.gateway(plane)
    gw.wait_version(version)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        r = client.get("/ep/chat/v1/models")
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "mock"
        assert r.headers["x-corral-replica"] == "a"

        # Host-header routing passes the path through untouched, query string included.
        r = client.post("/echo?x=1", headers={"host": "chat.models.test:8080"}, content=b"hi")
        assert r.status_code == 200
        echoed = r.json()
        assert echoed["body"] == "hi"
        assert echoed["headers"]["x-forwarded-host"] == "chat.models.test:8080"

        # A chunked request body arrives whole.
        r = client.post("/ep/chat/echo", content=iter([b"one ", b"two ", b"three"]))
        assert r.json()["body"] == "one two three"

        r = client.post("/ep/private/v1/embeddings", json={"input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = client.post(
            "/ep/private/echo", headers={"authorization": f"Bearer {token}"}, content=b"ok"
        )
        assert r.status_code == 200 and r.headers["x-corral-replica"] == "b"
        # corral's credential is not passed on to the model server.
        assert "authorization" not in r.json()["headers"]

        r = client.get("/ep/nope/v1/models")
        assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
        assert client.get("/elsewhere").status_code == 404

        r = client.post("/ep/chat/v1/chat/completions", json={"max_tokens": 3})
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
        r = client.post("/ep/chat/v1/completions", json={"max_tokens": 2})
        assert r.json()["choices"][0]["text"] == "tok0 tok1"

    metrics = gw.get("/_corral/metrics").text
    assert 'corral_gateway_requests_total{code="2xx",endpoint="chat"}' in metrics
    load = gw.endpoint_load("chat")
    assert load["arrivals"] == 5 and load["in_flight"] == 0
    assert load["latency_p50_ms"] is not None
    # The same figures reach the control plane unasked, every second.
    wait_for(
        "a load report with all five requests",
        lambda: any(
            e.name == "chat" and e.arrivals == 5 and e.replicas[0].id == "a"
            for report in plane.reports
            for e in report.endpoints
        ),
    )
    assert plane.reports[-1].gateway == "test-gateway"


def test_stream_chunks_pass_through_as_they_are_sent(procs: Procs) -> None:
    interval = 0.1
    replica = procs.replica("s", "--chunk-interval", str(interval)).wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", replica.route())))
    arrivals: list[tuple[float, bytes]] = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            f"{gw.url}/ep/chat/v1/chat/completions",
            json={"stream": True, "max_tokens": 8},
        ) as response,
    ):
        sent = time.monotonic()
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for piece in response.iter_raw():
            arrivals.append((time.monotonic(), piece))
    body = b"".join(p for _, p in arrivals)
    events = sse_events(body)
    assert events[-1] == "[DONE]" and len(events) == 9
    # Each event arrives on its own, spaced like the replica sends them (not all at the end).
    times = [t for t, piece in arrivals if b"data: {" in piece]
    assert len(times) == 8
    assert times[0] - sent < interval * 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > interval * 0.5, gaps
    assert sorted(gaps)[len(gaps) // 2] < interval * 2, gaps
    seqs = [json.loads(e)["seq"] for e in events[:-1]]
    assert seqs == list(range(8))


def test_client_disconnect_cancels_the_replica_request(procs: Procs) -> None:
    replica = procs.replica("s", "--chunk-interval", "0.05").wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", replica.route())))
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            f"{gw.url}/ep/chat/v1/chat/completions",
            headers={"x-request-id": "leaver"},
            json={"stream": True, "max_tokens": 200},
        ) as response,
    ):
        received = b""
        for piece in response.iter_raw():
            received += piece
            if received.count(b"data: ") >= 2:
                break
    # Leaving the `with` closed the connection mid-stream (200 chunks take 10 s).
    wait_for("replica sees the cancel", lambda: "leaver" in replica.ids("cancel"), timeout=5)
    assert "leaver" not in replica.ids("done")
    wait_for("gateway in-flight back to 0", lambda: gw.endpoint_load("chat")["in_flight"] == 0)
