"""The endpoint page end to end: a real control plane, gateway and agent; an endpoint
serving `python -m http.server`; load sent through the gateway moves the page's chart."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from support.cluster import ADMIN_TOKEN, Cluster, wait_for
from support.console import LogIn

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NAME = "web"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The e2e cluster with a gateway (as tests/integration/test_endpoints.py starts it) and
    one agent; the server knows the gateway's address, so the page shows the full URL."""
    c = Cluster(tmp_path)
    gateway = c.gateway("gw-e2e")
    c.start_server()
    gateway.start()
    try:
        c.agent("node-a")
        c.wait_node_ready("node-a")
        yield c
    finally:
        gateway.stop()
        c.close()  # its agents' replicas and lifelines too


def test_load_through_the_gateway_moves_the_endpoint_pages_chart(
    cluster: Cluster, log_in: LogIn
) -> None:
    gateway = cluster.env["CORRAL_GATEWAY_PUBLIC_URL"]
    api = httpx.Client(base_url=cluster.url, headers=ADMIN, timeout=30)
    deployed = api.post(
        "/v1/workspaces/default/endpoints",
        json={
            "name": NAME,
            "command": "python3 -m http.server $PORT",
            "readiness": {"path": "/"},
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        },
    )
    assert deployed.status_code == 201, deployed.text

    page = log_in(start=f"/ui/endpoints/default/{NAME}")
    expect(page.get_by_test_id("endpoint-url")).to_have_text(f"{gateway}/ep/{NAME}/")
    expect(page.get_by_test_id("endpoint-curl")).to_have_text(
        f'curl -H "Authorization: Bearer $CORRAL_TOKEN" {gateway}/ep/{NAME}/'
    )
    # The status fragment polls: the replica becomes ready on node-a, at revision 1.
    row = page.get_by_test_id("replica-row")
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("ready", timeout=40_000)
    expect(row.get_by_role("link", name="node-a")).to_have_attribute("href", "/ui/nodes/node-a")
    expect(page.get_by_test_id("rollout-summary")).to_have_text(
        "every replica runs revision 1 (1 ready)"
    )

    stop = threading.Event()

    def send_load() -> None:
        with httpx.Client(base_url=gateway, headers=ADMIN, timeout=10) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    http.get(f"/ep/{NAME}/")

    senders = [threading.Thread(target=send_load, daemon=True) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        wait_for("the gateway to serve the endpoint", lambda: _serves(gateway), timeout=30)
        chart = page.get_by_test_id("chart-requests")
        # console.js refreshes it every 2 s and writes the newest requests/s in data-last.
        page.wait_for_function(
            "el => parseFloat(el.dataset.last) > 0", arg=chart.element_handle(), timeout=30_000
        )
        expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9][0-9]*$"))
        expect(chart.locator("canvas").first).to_be_visible()
        expect(page.get_by_test_id("stat-rps").locator(".v")).not_to_have_text("—")
    finally:
        stop.set()
        for sender in senders:
            sender.join(15)
    api.close()


def _serves(gateway: str) -> bool:
    return httpx.get(f"{gateway}/ep/{NAME}/", headers=ADMIN, timeout=5).status_code == 200
