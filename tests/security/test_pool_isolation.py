"""Pools buy machines with the operator's money: only a cluster admin creates, scales or
deletes them (a workspace admin included is refused); anyone may read them. A workspace's
GPU usage and cost are its own members' and the cluster admins' business alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.server.services.pools import FLEET, add_event, instance_view
from corral.server.store.tables import Node, PoolInstance, Workspace
from support.app import in_process
from support.store import add_run, register_node

ADMIN = {"Authorization": "Bearer crl_admin"}
POOL = {"name": "h100", "provider": "aws", "type": "p5.48xlarge", "region": "us-east-1"}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        for name in ("team-a", "team-b"):
            r = client.post("/v1/workspaces", json={"name": name}, headers=ADMIN)
            assert r.status_code == 201
        yield client


def _token(api: TestClient, role: str, workspace: str) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_only_cluster_admins_change_pools_and_anyone_reads_them(api: TestClient) -> None:
    assert api.post("/v1/pools", json=POOL, headers=ADMIN).status_code == 201
    for role in ("admin", "member", "viewer"):
        caller = _token(api, role, "team-a")
        attempts = [
            api.post("/v1/pools", json={**POOL, "name": f"mine-{role}"}, headers=caller),
            api.patch("/v1/pools/h100", json={"max": 64}, headers=caller),
            api.delete("/v1/pools/h100", params={"force": "true"}, headers=caller),
        ]
        for r in attempts:
            assert r.status_code == 403, (role, r.text)
            assert "only a cluster admin can" in r.json()["error"]["message"]
        assert api.get("/v1/pools", headers=caller).json()["pools"][0]["spec"]["name"] == "h100"
        assert api.get("/v1/pools/h100", headers=caller).status_code == 200
    assert api.get("/v1/pools").status_code == 401
    # Nothing they tried took effect.
    assert api.get("/v1/pools/h100", headers=ADMIN).json()["spec"]["max"] == 1
    names = [p["spec"]["name"] for p in api.get("/v1/pools", headers=ADMIN).json()["pools"]]
    assert names == ["h100"]


def _ran(api: TestClient, workspace: str, name: str, gpus: int) -> None:
    """A job of `workspace` that held `gpus` GPUs for an hour on a $1/GPU-hour node."""
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    node = register_node(store, f"n-{name}", gpus=8)
    with store.transaction() as session:
        # As a join token bound it (an agent cannot set its own price).
        session.get(Node, node).labels = {"price-per-hour": "8"}  # type: ignore[union-attr]
    now = api.app.state.cp.clock.now()  # type: ignore[attr-defined]
    with store.transaction() as session:
        ws = session.scalars(select(Workspace).where(Workspace.name == workspace)).one()
        add_run(
            session, ws.id, node, gpus, now - 3600, now, name=name, job_id=name, replica_id=name
        )


def test_usage_is_seen_by_its_members_and_cluster_admins_only(api: TestClient) -> None:
    _ran(api, "team-a", "a-job", 2)
    _ran(api, "team-b", "b-job", 3)
    a_member = _token(api, "member", "team-a")
    mine = api.get("/v1/usage", headers=a_member).json()["usage"]
    assert [(u["workspace"], u["gpu_hours"], u["usd"]) for u in mine] == [("team-a", 2.0, 2.0)]
    own = api.get("/v1/workspaces/team-a/usage", headers=a_member)
    assert own.status_code == 200 and own.json()["usd"] == 2.0
    other = api.get("/v1/workspaces/team-b/usage", headers=a_member)
    assert other.status_code == 403
    assert "team-b" not in other.text.replace("workspace 'team-b'", "")
    every = api.get("/v1/usage", headers=ADMIN).json()["usage"]
    assert {u["workspace"]: u["usd"] for u in every} == {
        "default": 0.0,
        "team-a": 2.0,
        "team-b": 3.0,
    }
    assert api.get("/v1/workspaces/team-b/usage", headers=ADMIN).json()["gpu_hours"] == 3.0


SECRET = "b-secret-train"  # a job of team-b's: its name is team-b's business


def test_no_pool_route_shows_another_workspace_its_job_names(api: TestClient) -> None:
    """Why a pool grew names the job it grew for, and the fleet's events name jobs no pool
    can hold: a cluster admin sees them, a reader of another workspace sees "a job"."""
    assert api.post("/v1/pools", json=POOL, headers=ADMIN).status_code == 201
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    now = api.app.state.cp.clock.now()  # type: ignore[attr-defined]
    with store.transaction() as session:
        add_event(session, "h100", now, "grow", f"1 x p5.48xlarge ($98.32/h) for job '{SECRET}'")
        add_event(session, FLEET, now, "unmet", f"job '{SECRET}': no pool can hold it")
        session.add(
            PoolInstance(
                id="i1",
                pool="h100",
                node_name="h100-1",
                state="failed",
                launched_at=now,
                reason=f"launched for job {SECRET}; it never joined",
                version=1,
            )
        )
    for role in ("viewer", "member", "admin"):
        reader = _token(api, role, "team-a")
        listed = api.get("/v1/pools", headers=reader)
        got = api.get("/v1/pools/h100", headers=reader)
        assert listed.status_code == got.status_code == 200
        for r in (listed, got):
            assert SECRET not in r.text, (role, r.text)
        texts = [e["text"] for e in got.json()["events"]]
        assert "1 x p5.48xlarge ($98.32/h) for a job" in texts  # why it grew, still
        assert all(e["kind"] != "unmet" for e in got.json()["events"])  # the fleet's
        assert got.json()["instances"][0]["reason"] == "launched for a job; it never joined"
    seen = api.get("/v1/pools/h100", headers=ADMIN).json()
    assert {e["text"] for e in seen["events"]} >= {
        f"1 x p5.48xlarge ($98.32/h) for job '{SECRET}'",
        f"job '{SECRET}': no pool can hold it",
    }
    with store.read() as session:
        row = session.get(PoolInstance, "i1")
        assert row is not None and SECRET in (instance_view(row, admin=True).reason or "")
