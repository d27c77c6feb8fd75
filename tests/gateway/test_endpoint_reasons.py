"""A 503 for want of a replica says why, in the words the control plane put in the route."""

from __future__ import annotations

import httpx

from corral.gateway.exchange import because
from corral.wire.gateway import REASON_MAX
from gateway.conftest import Procs
from gateway.harness import endpoint


def test_a_held_request_that_times_out_says_why_no_replica_is_ready(procs: Procs) -> None:
    plane = procs.plane()
    gw = procs.gateway(plane)
    why = "no node has room for a replica now"
    gw.wait_version(plane.set(endpoint("chat", hold_timeout_s=0.5, reason=why)))
    r = httpx.post(f"{gw.url}/ep/chat/v1/chat/completions", json={}, timeout=30)
    assert r.status_code == 503
    message = r.json()["error"]["message"]
    assert message == f"no replica of 'chat' became ready within 0.5 s: {why}"


def test_without_a_reason_the_503_is_as_before_and_a_long_one_is_cut() -> None:
    assert because("no replica", None) == "no replica"
    assert because("no replica", "") == "no replica"
    long = because("x", "y" * 10_000)
    assert long == "x: " + "y" * REASON_MAX
