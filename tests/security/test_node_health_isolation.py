"""What a node's health view shows a workspace: its own workloads only (in the list and in
the events), no operator events, no raw signals or boot id; and no workspace token may
inject a fault, drain, mark healthy or delete a node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.core.scheduler import Scheduler
from corral.server.services import health
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.tables import Node
from corral.wire.health import GpuSignals, HealthReport, XidEvent
from support.app import in_process
from support.cli import ADMIN, submit_job
from support.store import register_node


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        register_node(client.app.state.cp.store, "n1", gpus=2)  # type: ignore[attr-defined]
        yield client


def _token(api: TestClient, workspace: str, role: str = "member") -> dict[str, str]:
    api.post("/v1/workspaces", json={"name": workspace}, headers=ADMIN)
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_a_workspace_sees_its_own_work_on_a_sick_node_and_nothing_of_others(
    api: TestClient,
) -> None:
    cp = api.app.state.cp  # type: ignore[attr-defined]
    team_a, team_b = _token(api, "team-a"), _token(api, "team-b")
    submit_job(api, "mine", workspace="team-a", resources={"gpus": "H100:1"})
    submit_job(api, "theirs", workspace="team-b", resources={"gpus": "H100:1"})
    with cp.store.read() as session:
        loaded = SnapshotLoader().load(session, 10.0)
    plan = Scheduler().place(loaded.snapshot, 10.0)
    with cp.store.transaction() as session:
        apply_plan(session, plan, loaded, 10.0)
    assert api.post("/v1/nodes/n1/cordon", headers=ADMIN).status_code == 200
    with cp.store.transaction() as session:
        node = session.scalars(select(Node).where(Node.name == "n1")).one()
        report = HealthReport(
            sent_at=11.0,
            boot_id="b1",
            full=True,
            backend="fake",
            gpus=[
                GpuSignals(
                    index=i, uuid=f"n1-{i}", xids=[XidEvent(code=79, at=11.0, source="fake")]
                )
                for i in range(2)
            ],
        )
        health.record_health(session, node.id, report, 11.0)

    admin = api.get("/v1/nodes/n1", headers=ADMIN).json()
    assert {w["job"] for w in admin["workloads"]} == {"mine", "theirs"}
    assert admin["signals"] is not None and admin["boot_id"] == "b1"
    assert any(e["kind"] == "operator" for e in admin["events"])
    acted = next(e for e in admin["events"] if "cordoned by corral" in e["text"])
    assert sorted(acted["workloads"]) == ["team-a/mine", "team-b/theirs"]

    mine = api.get("/v1/nodes/n1", headers=team_a).json()
    assert [w["job"] for w in mine["workloads"]] == ["mine"]
    assert mine["signals"] is None and mine["boot_id"] is None
    assert not any(e["kind"] == "operator" for e in mine["events"])
    assert "theirs" not in str(mine["events"]) and "team-b" not in str(mine)
    acted = next(e for e in mine["events"] if "cordoned by corral" in e["text"])
    assert acted["workloads"] == ["team-a/mine"]
    assert "mine" not in str(api.get("/v1/nodes/n1", headers=team_b).json()["workloads"])

    admin_a = _token(api, "team-a", role="admin")
    for method, path, body in (
        ("POST", "/v1/nodes/n1/faults", {"kind": "xid", "gpu": 0, "xid": 79}),
        ("POST", "/v1/nodes/n1/drain", None),
        ("POST", "/v1/nodes/n1/set-healthy", None),
        ("DELETE", "/v1/nodes/n1", None),
    ):
        r = api.request(method, path, json=body, headers=admin_a)
        assert r.status_code == 403, (path, r.text)
        assert "only a cluster admin" in r.json()["error"]["message"]
