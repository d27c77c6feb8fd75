"""GET /v1/status on SQLite and PostgreSQL: fleet totals for everyone, work counts only of
the workspaces the caller sees, the per-workspace table for cluster admins only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import in_process
from support.store import register_node

ADMIN = {"Authorization": "Bearer crl_admin"}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def test_status_counts_the_fleet_and_scopes_the_work(api: TestClient) -> None:
    register_node(api.app.state.cp.store, "n1", gpus=4)  # type: ignore[attr-defined]
    for name in ("team-a", "team-b"):
        assert api.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201
    # Asks for more GPUs than any node has: pending, with a reason.
    big = {"command": "true", "resources": {"gpus": "H100:16"}}
    for ws, name in (("team-a", "a1"), ("team-a", "a2"), ("team-b", "secret-b")):
        r = api.post(f"/v1/workspaces/{ws}/jobs", json={"name": name, **big}, headers=ADMIN)
        assert r.status_code == 201, r.text

    everything = api.get("/v1/status", headers=ADMIN).json()
    assert everything["scope"] == "*"
    assert everything["nodes"]["total"] == 1 and everything["nodes"]["ready"] == 1
    assert everything["gpus"] == [{"model": "H100", "total": 4, "used": 0, "free": 4}]
    assert everything["work"]["pending"] == 3 and everything["work"]["running"] == 0
    assert sum(r["jobs"] for r in everything["work"]["pending_reasons"]) == 3
    assert {w["name"]: w["pending"] for w in everything["workspaces"]} == {
        "team-a": 2,
        "team-b": 1,
    }

    r = api.post("/v1/tokens", json={"role": "viewer", "workspace": "team-a"}, headers=ADMIN)
    viewer = {"Authorization": f"Bearer {r.json()['token']}"}
    mine = api.get("/v1/status", headers=viewer)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["scope"] == "team-a"
    assert body["work"]["pending"] == 2
    assert body["workspaces"] == []  # no other workspace named
    assert body["nodes"]["total"] == 1 and body["gpus"][0]["total"] == 4  # fleet totals
    assert "secret-b" not in mine.text and "team-b" not in mine.text


def test_status_needs_a_token(api: TestClient) -> None:
    assert api.get("/v1/status").status_code == 401


def test_status_counts_pods_of_the_workspaces_the_caller_sees(api: TestClient) -> None:
    assert api.post("/v1/workspaces", json={"name": "team-a"}, headers=ADMIN).status_code == 201
    for ws, name in (("default", "dev"), ("default", "old"), ("team-a", "theirs")):
        r = api.post(f"/v1/workspaces/{ws}/pods", json={"name": name}, headers=ADMIN)
        assert r.status_code == 201, r.text
    assert api.post("/v1/workspaces/default/pods/old/stop", headers=ADMIN).status_code == 200
    work = api.get("/v1/status", headers=ADMIN).json()["work"]
    # No node: none runs; a stopped pod is not counted.
    assert (work["pods"], work["pods_running"]) == (2, 0)
    r = api.post("/v1/tokens", json={"role": "viewer", "workspace": "team-a"}, headers=ADMIN)
    viewer = {"Authorization": f"Bearer {r.json()['token']}"}
    assert api.get("/v1/status", headers=viewer).json()["work"]["pods"] == 1
