"""The HTTP API in-process, on SQLite and PostgreSQL: shapes, errors, permissions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
JOB = "/v1/workspaces/default/jobs"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def token(api: TestClient, role: str, workspace: str) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_health_needs_no_token_and_the_api_does(api: TestClient) -> None:
    assert api.get("/healthz").json()["ok"] is True
    r = api.get(JOB)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert api.get(JOB, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_bad_spec_is_a_422_naming_every_field(api: TestClient) -> None:
    r = api.post(
        JOB, json={"command": "x", "replicsa": 2, "resources": {"gpus": "H100:-1"}}, headers=ADMIN
    )
    assert r.status_code == 422
    fields = {f["path"] for f in r.json()["error"]["fields"]}
    assert fields == {"replicsa", "resources.gpus.count"}
    assert api.get(JOB, headers=ADMIN).json()["jobs"] == []  # nothing was stored


def test_submit_get_list_and_duplicate(api: TestClient) -> None:
    r = api.post(JOB, json={"name": "a", "command": "true"}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["state"] == "pending"
    assert api.get(f"{JOB}/a", headers=ADMIN).json()["name"] == "a"
    dup = api.post(JOB, json={"name": "a", "command": "true"}, headers=ADMIN)
    assert dup.status_code == 409 and "already exists" in dup.json()["error"]["message"]
    generated = api.post(JOB, json={"command": "true"}, headers=ADMIN).json()["name"]
    assert generated and generated != "a"
    assert {j["name"] for j in api.get(JOB, headers=ADMIN).json()["jobs"]} == {"a", generated}
    assert api.get(f"{JOB}/zzz", headers=ADMIN).status_code == 404


def test_cancel_then_delete_a_pending_job(api: TestClient) -> None:
    api.post(JOB, json={"name": "c", "command": "true"}, headers=ADMIN)
    # Nothing to run on, so it stays pending and cannot be deleted yet.
    assert api.delete(f"{JOB}/c", headers=ADMIN).status_code == 409
    assert api.post(f"{JOB}/c/cancel", headers=ADMIN).json()["state"] == "cancelled"
    assert api.delete(f"{JOB}/c", headers=ADMIN).status_code == 204
    assert api.get(f"{JOB}/c", headers=ADMIN).status_code == 404


def test_roles_and_workspaces(api: TestClient) -> None:
    assert api.post("/v1/workspaces", json={"name": "team-a"}, headers=ADMIN).status_code == 201
    assert api.post("/v1/workspaces", json={"name": "team-a"}, headers=ADMIN).status_code == 409
    bad = api.post("/v1/workspaces", json={"name": "Team A"}, headers=ADMIN)
    assert bad.status_code == 422
    viewer = token(api, "viewer", "team-a")
    member = token(api, "member", "team-a")
    ws_admin = token(api, "admin", "team-a")
    a_jobs = "/v1/workspaces/team-a/jobs"
    assert api.post(a_jobs, json={"command": "true"}, headers=viewer).status_code == 403
    assert api.post(a_jobs, json={"command": "true"}, headers=member).status_code == 201
    assert api.get(a_jobs, headers=viewer).status_code == 200
    assert api.get(JOB, headers=member).status_code == 403  # another workspace
    assert api.post("/v1/workspaces", json={"name": "x"}, headers=ws_admin).status_code == 403
    assert api.post("/v1/join-tokens", headers=ws_admin).status_code == 403
    assert api.post("/v1/tokens", json={"role": "member"}, headers=member).status_code == 403
    made = api.post("/v1/tokens", json={"role": "viewer"}, headers=ws_admin)
    assert made.status_code == 201 and made.json()["workspace"] == "team-a"
    assert api.get("/v1/whoami", headers=member).json() == {
        "token": api.get("/v1/whoami", headers=member).json()["token"],
        "role": "member",
        "workspace": "team-a",
    }
    assert [w["name"] for w in api.get("/v1/workspaces", headers=member).json()["workspaces"]] == [
        "team-a"
    ]


def test_join_tokens_register_nodes_and_user_tokens_do_not(api: TestClient) -> None:
    inventory = {"hostname": "h", "cpus": 8, "memory_mb": 1000, "disk_mb": 1000}
    body = {"join_token": "crl_admin", "name": "n1", "inventory": inventory}
    assert api.post("/v1/agent/register", json=body).status_code == 401
    fresh = api.post("/v1/join-tokens", headers=ADMIN).json()["token"]
    r = api.post("/v1/agent/register", json={**body, "join_token": fresh})
    assert r.status_code == 200 and r.json()["node_token"].startswith("crn_")
    nodes = api.get("/v1/nodes", headers=ADMIN).json()["nodes"]
    assert [(n["name"], n["connected"]) for n in nodes] == [("n1", False)]
    # A node token is not a user token.
    assert (
        api.get(JOB, headers={"Authorization": f"Bearer {r.json()['node_token']}"}).status_code
        == 401
    )


def test_quotas_validate_replace_and_are_admin_only(api: TestClient) -> None:
    quota = "/v1/workspaces/default/quota"
    bad = api.put(quota, json={"gpus": {"H100": -2}}, headers=ADMIN)
    assert bad.status_code == 422
    assert "cannot be negative" in bad.text and bad.json()["error"]["fields"][0]["path"] == "gpus"
    unknown = api.put(quota, json={"gpu": {"H100": 2}}, headers=ADMIN)
    assert unknown.status_code == 422
    assert api.get(quota, headers=ADMIN).json()["guaranteed"] == {}
    ok = api.put(quota, json={"gpus": {"h100": 8, "*": 2}}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["guaranteed"] == {"*": 2, "H100": 8}
    replaced = api.put(quota, json={"gpus": {"A100": 4, "H100": 0}}, headers=ADMIN).json()
    assert replaced["guaranteed"] == {"A100": 4}
    member = token(api, "member", "default")
    denied = api.put(quota, json={"gpus": {"A100": 99}}, headers=member)
    assert denied.status_code == 403 and "cluster admin" in denied.json()["error"]["message"]
    listed = api.get("/v1/quotas", headers=member).json()["quotas"]
    assert [(q["workspace"], q["guaranteed"]) for q in listed] == [("default", {"A100": 4})]


def test_scheduling_fields_round_trip_and_bad_ones_are_named(api: TestClient) -> None:
    r = api.post(
        JOB,
        json={
            "name": "t",
            "command": "true",
            "priority": "dev",
            "preemptible": True,
            "topology": "rack",
            "node_selector": {"pool": "a"},
            "max_runtime": "1h30m",
        },
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert (spec["priority"], spec["max_runtime"], spec["topology"]) == (200, 5400.0, "rack")
    bad = api.post(
        JOB,
        json={"command": "x", "priority": "urgent", "topology": "planet", "max_runtime": "soon"},
        headers=ADMIN,
    )
    assert bad.status_code == 422
    assert {f["path"] for f in bad.json()["error"]["fields"]} == {
        "priority",
        "topology",
        "max_runtime",
    }
