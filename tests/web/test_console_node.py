"""The node page: its view model (signals, ECC, who holds each GPU) and the page and its
panel through the real app, for the cluster admin and for a workspace's token."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from corral.core.states import NodeCondition
from corral.server.runtime import ControlPlane
from corral.server.services import health
from corral.server.services.fleet_view import NodeFacts, Running
from corral.server.services.identity import workspace_by_name
from corral.server.store.tables import Node
from corral.web.views import node as views
from corral.wire.api import NodeView
from corral.wire.health import GpuSignals, HealthReport
from corral.wire.nodes import HealthEventView, NodeDetail
from support.app import ADMIN_TOKEN
from support.console import gpu_view, log_in, new_token
from support.store import add_run, register_node

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# -- the view model -------------------------------------------------------------------------


def view(**fields: Any) -> NodeView:
    values: dict[str, Any] = {
        "id": "id-n",
        "name": "n",
        "address": None,
        "condition": NodeCondition.READY,
        "gpu_backend": "nvml",
        "gpus": [gpu_view(0, allocated=True), gpu_view(1, allocated=True), gpu_view(2)],
        "cpus": 8,
        "memory_mb": 16000,
        "disk_mb": 100000,
        "labels": {"zone": "a", "pool": "p"},
        "agent_version": "0",
        "connected": True,
        "last_heartbeat_at": 90.0,
        "heartbeat_age_s": 10.0,
        "registered_at": 0.0,
        **fields,
    }
    return NodeView(**values)


SIGNALS = {
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-0",
            "utilization_pct": 93.0,
            "memory_used_mb": 40960,
            "memory_total_mb": 81920,
            "temperature_c": 71.0,
            "power_w": 650.0,
            "ecc_volatile_corrected": 3,
            "ecc_volatile_uncorrected": 0,
            "throttle": ["hw_thermal"],
            "remapped_rows_pending": True,
        },
        {"index": 1, "uuid": "GPU-1", "present": False, "unknown": ["temperature_c"]},
    ],
    "node": {"disks": [{"path": "/", "role": "workload", "free_mb": 1024, "total_mb": 4096}]},
}


def detail(signals: dict[str, Any] | None) -> NodeDetail:
    xid = HealthEventView(at=50.0, kind="xid", text="GPU 1: Xid 79, fell off the bus", gpu=1)
    return NodeDetail(
        node=view(),
        signals=signals,
        health_at=80.0,
        last_xid={"1": xid},
        events=[xid],
        findings=[
            {
                "gpu": 1,
                "sentence": "fell off the bus",
                "health": "unhealthy",
                "repair": "reboot-node",
            }
        ],
    )


RUNNING = [
    Running("default", "train", "job", "train", 0, (0,), "running"),
    Running("default", "chat", "endpoint", "chat-r2-0", 0, (), "running"),
]


def test_a_gpu_row_carries_its_last_reported_signals() -> None:
    page = views.node_page(detail(SIGNALS), NodeFacts(view(), RUNNING, hidden=1), 100.0, True)
    first, second, third = page.gpus
    assert (first.utilization, first.memory_used_mb, first.temperature_c) == (93.0, 40960, 71.0)
    assert first.ecc == "volatile 3 / 0" and first.throttle == ["hw_thermal"]
    assert first.remapped == "row remap pending (reset the GPU)"
    assert first.holders == ["default/train #0"]
    assert second.present is False and second.unknown == ["temperature_c"]
    assert second.last_xid == "GPU 1: Xid 79, fell off the bus"
    assert second.holders == ["a job of another workspace"]  # allocated, not to anyone shown
    assert third.present is None and third.holders == [] and third.ecc is None
    assert page.health_age_s == 20.0 and page.signals_shown and page.reported
    assert page.disks[0].used_share == 0.75
    assert page.findings == ["GPU 1: fell off the bus (unhealthy, repair: reboot-node)"]
    assert page.all_labels == [("pool", "p"), ("zone", "a")]


def test_workloads_link_to_their_own_page_and_endpoints_by_the_endpoints_name() -> None:
    page = views.node_page(detail(None), NodeFacts(view(), RUNNING), 100.0, False)
    assert [(w.href, w.job) for w in page.workloads] == [
        ("/ui/jobs/default/train", "train"),
        ("/ui/endpoints/default/chat", "chat-r2-0"),
    ]
    assert not page.signals_shown and page.gpus[0].utilization is None


# -- the page through the real app ------------------------------------------------------------


def cp_of(client: TestClient) -> ControlPlane:
    return client.app.state.cp  # type: ignore[attr-defined,no-any-return]


def reported_node(client: TestClient) -> str:
    """gpu-1: two GPUs, a health report, a job of `default` on GPU 0."""
    cp = cp_of(client)
    node_id = register_node(cp.store, "gpu-1", gpus=2, labels={"rack": "nvl-3"})
    report = HealthReport(
        sent_at=5.0,
        full=True,
        backend="fake",
        gpus=[
            GpuSignals(
                index=0, uuid="gpu-1-0", utilization_pct=97.0, temperature_c=66.0, power_w=612.0
            ),
            GpuSignals(
                index=1, uuid="gpu-1-1", utilization_pct=3.0, temperature_c=35.0, power_w=90.0
            ),
        ],
    )
    with cp.store.transaction() as session:
        default = workspace_by_name(session, "default")
        assert default is not None
        add_run(session, default.id, node_id, 1, cp.clock.now(), name="train")
        health.record_health(session, node_id, report, cp.clock.now())
    return node_id


def test_the_admin_sees_signals_events_workloads_and_labels(admin: TestClient) -> None:
    reported_node(admin)
    assert admin.post("/v1/nodes/gpu-1/cordon", headers=ADMIN).status_code == 200
    page = admin.get("/ui/nodes/gpu-1")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<h1>gpu-1</h1>" in text and 'data-testid="condition">cordoned<' in text
    assert 'data-testid="cordon-reason">cordoned by' in text
    assert text.count('data-testid="gpu-row"') == 2
    assert "97%" in text and "66 °C" in text and "612 W" in text
    assert 'href="/ui/jobs/default/train"' in text
    assert "nvl-3" in text  # its labels
    assert "operator" in text and "cordoned by" in text  # the event of the cordon
    assert 'data-testid="uncordon"' in text and "?part=panel" in text
    panel = admin.get("/ui/nodes/gpu-1/panel", headers={"HX-Request": "true"})
    assert panel.text.startswith('<div id="node-panel"') and 'hx-trigger="every 5s"' in panel.text
    back = admin.post(
        "/ui/nodes/gpu-1/uncordon?part=panel",
        headers={"HX-Request": "true", "X-CSRF-Token": log_in(admin)},
    )
    assert back.status_code == 200 and 'data-testid="condition">ready<' in back.text
    assert "node &#39;gpu-1&#39; takes work again" in back.text


def test_a_workspace_token_sees_its_own_work_and_no_signals(admin: TestClient) -> None:
    node_id = reported_node(admin)
    assert admin.post("/v1/workspaces", json={"name": "team"}, headers=ADMIN).status_code == 201
    with cp_of(admin).store.transaction() as session:
        row = session.get(Node, node_id)
        assert row is not None
        health.event(session, row, 9.0, "action", "moved 1 job", workloads=["default/train"])
    log_in(admin, new_token(admin, "viewer", "team"))
    text = admin.get("/ui/nodes/gpu-1").text
    assert "default/train" not in text and 'href="/ui/jobs/default/train"' not in text
    assert "1 replica of another workspace" in text
    assert "shown to cluster admins" in text and "97%" not in text
    assert "hx-post" not in text


def test_an_endpoints_replica_links_to_the_endpoint(admin: TestClient) -> None:
    register_node(cp_of(admin).store, "cpu-1", cpus=8)
    body = {"name": "chat", "command": "python3 -m http.server $PORT"}
    r = admin.post("/v1/workspaces/default/endpoints", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while not admin.get("/v1/nodes/cpu-1", headers=ADMIN).json()["workloads"]:
        assert time.monotonic() < deadline, "the scheduler placed no replica of chat"
        time.sleep(0.05)
    text = admin.get("/ui/nodes/cpu-1").text
    assert 'href="/ui/endpoints/default/chat"' in text
    assert 'href="/ui/endpoints/default/chat"' in admin.get("/ui/fleet").text


def test_an_unknown_node_is_a_404_page(admin: TestClient) -> None:
    for url in ("/ui/nodes/nope", "/ui/nodes/nope/panel", "/ui/nodes/nope/card"):
        answer = admin.get(url)
        assert answer.status_code == 404 and "node &#39;nope&#39; not found" in answer.text
