"""Scale from zero, the hold bound, and 1 → N driven by core/autoscale.py on real signals."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from corral.core.autoscale import AutoscalePolicy, AutoscaleState, LoadSample, decide
from corral.wire.gateway import Wake
from gateway.conftest import Procs
from gateway.harness import MockReplica, endpoint
from support.cluster import wait_for


def _post(url: str, rid: str, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.post(url, json={"max_tokens": 2}, headers={"x-request-id": rid, **headers})


def test_scale_from_zero_holds_requests_and_answers_them_all(procs: Procs) -> None:
    started: list[MockReplica] = []
    lock = threading.Lock()
    plane = procs.plane()

    def autoscaler(wake: Wake) -> None:
        # The fake autoscaler: start one replica on the first wake, publish it once ready.
        with lock:
            if started:
                return
            replica = procs.replica("cold", "--startup-delay", "0.5")
            started.append(replica)
        replica.wait_ready()
        plane.set(endpoint("chat", replica.route(), max_held=50, hold_timeout_s=30))

    plane.on_wake = autoscaler
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", max_held=50, hold_timeout_s=30)))

    url = f"{gw.url}/ep/chat/v1/chat/completions"
    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(_post, url, f"r{i}") for i in range(20)]
        wait_for("requests held", lambda: gw.endpoint_load("chat")["held"] > 0, interval=0.01)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 20
    assert len(started) == 1
    assert plane.wakes and plane.wakes[0][0] - t0 < 1.0  # told at once, not on a poll
    assert started[0].ids("recv") >= {f"r{i}" for i in range(20)}
    load = gw.endpoint_load("chat")
    assert load["held"] == 0 and load["in_flight"] == 0 and load["rejected"] == 0


def test_beyond_the_hold_bound_is_503_with_retry_after(procs: Procs) -> None:
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", max_held=2, hold_timeout_s=1.0)))
    url = f"{gw.url}/ep/chat/v1/chat/completions"
    with ThreadPoolExecutor(5) as pool:
        held = [pool.submit(_post, url, f"h{i}") for i in range(2)]
        wait_for("two held", lambda: gw.endpoint_load("chat")["held"] == 2, interval=0.01)
        t = time.monotonic()
        over = _post(url, "over")
        assert over.status_code == 503 and time.monotonic() - t < 0.5  # refused at once
        assert over.headers["retry-after"] == "1"
        timed_out = [f.result() for f in held]
    assert [r.status_code for r in timed_out] == [503, 503]
    assert all("retry-after" in r.headers for r in timed_out)
    assert gw.endpoint_load("chat")["rejected"] == 3
    assert plane.wakes  # and the autoscaler was asked


def test_last_replica_draining_still_answers_and_wakes(procs: Procs) -> None:
    replica = procs.replica("last").wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    gw.wait_version(plane.set(endpoint("chat", replica.route("draining"))))
    r = _post(f"{gw.url}/ep/chat/v1/chat/completions", "late")
    assert r.status_code == 200 and r.headers["x-corral-replica"] == "last"
    wait_for("a wake for the endpoint", lambda: plane.wakes)


def test_load_step_scales_one_to_n_with_the_autoscaler(procs: Procs) -> None:
    """Closed-loop clients step from 1 to 8; the controller here feeds core/autoscale."""
    policy = AutoscalePolicy(
        target_in_flight=2,
        min_replicas=1,
        max_replicas=4,
        stable_window_s=10,
        panic_window_s=2,
        scale_to_zero_after_s=60,
    )
    first = procs.replica("r0", "--delay", "0.1").wait_ready()
    plane = procs.plane()
    gw = procs.gateway(plane)
    replicas = [first]
    gw.wait_version(plane.set(endpoint("chat", first.route())))

    stop = threading.Event()
    clients = threading.Semaphore(1)
    statuses: list[int] = []

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not stop.is_set():
                with clients:
                    r = http.post(
                        f"{gw.url}/ep/chat/v1/chat/completions",
                        json={"max_tokens": 1},
                        headers={"x-request-id": f"c{n}-{i}"},
                    )
                statuses.append(r.status_code)
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    state = AutoscaleState.initial(policy, time.monotonic(), 1)
    desired_seen = [1]
    try:
        deadline = time.monotonic() + 30
        stepped = False
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not stepped and now - state.created_at > 1.5:
                for _ in range(7):
                    clients.release()  # the step: 1 → 8 concurrent clients
                stepped = True
            load = gw.endpoint_load("chat", window=0.5)
            sample = LoadSample(at=now, in_flight=load["mean_in_flight"], held=load["held"])
            decision = decide(policy, state, now, len(replicas), sample)
            state = decision.state
            desired_seen.append(decision.desired)
            while len(replicas) < decision.desired:
                replicas.append(procs.replica(f"r{len(replicas)}", "--delay", "0.1"))
                replicas[-1].wait_ready()
                plane.set(endpoint("chat", *(r.route() for r in replicas)))
            if len(replicas) == 4 and all(r.ids("recv") for r in replicas):
                break
            time.sleep(0.25)  # the controller's polling period, not a synchronisation
    finally:
        stop.set()
        for _ in range(8):
            clients.release()
        for t in threads:
            t.join(30)
    assert max(desired_seen) == 4, desired_seen
    assert all(r.ids("recv") for r in replicas), "every new replica took traffic"
    assert statuses and set(statuses) == {200}
