"""Issue 9: API tokens can be listed and revoked; a listing leaks nothing of a secret; a
token of one workspace learns nothing about another. In-process, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from corral.server.auth import hash_token
from corral.server.store.tables import Node
from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make(api: TestClient, role: str, workspace: str | None, name: str | None = None) -> str:
    body: dict[str, str] = {"role": role}
    if workspace is not None:
        body["workspace"] = workspace
    if name is not None:
        body["name"] = name
    r = api.post("/v1/tokens", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    secret: str = r.json()["token"]
    return secret


def workspaces(api: TestClient, *names: str) -> None:
    for name in names:
        assert api.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201


def test_a_listing_shows_each_token_and_nothing_made_from_a_secret(api: TestClient) -> None:
    workspaces(api, "team-a")
    secrets = [make(api, "member", "team-a") for _ in range(5)]
    secrets.append(make(api, "admin", None))
    r = api.get("/v1/tokens", headers=ADMIN)
    assert r.status_code == 200
    listed = r.json()["tokens"]
    assert len(listed) == 7  # the bootstrap admin, a second cluster admin, five members
    assert {t["workspace"] for t in listed} == {None, "team-a"}
    assert set(listed[0]) == {"name", "role", "workspace", "created_at"}
    for secret in secrets:
        for derived in (secret, hash_token(secret), secret[-6:], secret[-4:]):
            assert derived not in r.text, derived
    # Default names are not the secret's tail any more.
    names = {t["name"] for t in listed}
    assert all(not secret.endswith(n.rsplit("-", 1)[-1]) for n in names for secret in secrets)


def test_a_workspace_admin_sees_only_its_workspace_and_others_see_nothing(
    api: TestClient,
) -> None:
    workspaces(api, "team-a", "team-b")
    a_admin = bearer(make(api, "admin", "team-a", "a-admin"))
    make(api, "member", "team-a", "a-ci")
    make(api, "member", "team-b", "b-ci")
    mine = api.get("/v1/tokens", headers=a_admin).json()["tokens"]
    assert sorted((t["name"], t["workspace"]) for t in mine) == [
        ("a-admin", "team-a"),
        ("a-ci", "team-a"),
    ]
    assert api.get("/v1/tokens?workspace=team-b", headers=a_admin).status_code == 403
    only_b = api.get("/v1/tokens?workspace=team-b", headers=ADMIN).json()["tokens"]
    assert [t["name"] for t in only_b] == ["b-ci"]
    for role in ("member", "viewer"):
        r = api.get("/v1/tokens", headers=bearer(make(api, role, "team-a")))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_revocation_is_immediate_even_for_a_token_the_server_remembers(
    api: TestClient,
) -> None:
    workspaces(api, "team-a")
    member = bearer(make(api, "member", "team-a", "laptop"))
    jobs = "/v1/workspaces/team-a/jobs"
    # Used just now: the server holds who it is in its auth cache.
    assert api.get(jobs, headers=member).status_code == 200
    assert api.delete("/v1/tokens/laptop?workspace=team-a", headers=ADMIN).status_code == 204
    r = api.get(jobs, headers=member)
    assert r.status_code == 401
    assert "laptop" not in {
        t["name"] for t in api.get("/v1/tokens", headers=ADMIN).json()["tokens"]
    }
    again = api.delete("/v1/tokens/laptop?workspace=team-a", headers=ADMIN)
    assert again.status_code == 404


def test_a_workspace_admin_revokes_only_its_own_workspaces_tokens(api: TestClient) -> None:
    workspaces(api, "team-a", "team-b")
    a_admin = bearer(make(api, "admin", "team-a"))
    make(api, "member", "team-a", "ci")
    b_ci = bearer(make(api, "member", "team-b", "ci"))
    # "ci" of its own workspace is the default scope; team-b's "ci" is out of reach.
    denied = api.delete("/v1/tokens/ci?workspace=team-b", headers=a_admin)
    assert denied.status_code == 403
    assert api.get("/v1/workspaces/team-b/jobs", headers=b_ci).status_code == 200
    # A cluster-wide token is out of reach too: it is no workspace's.
    assert api.delete("/v1/tokens/local-admin", headers=a_admin).status_code == 404
    assert api.get("/v1/whoami", headers=ADMIN).status_code == 200
    assert api.delete("/v1/tokens/ci", headers=a_admin).status_code == 204
    assert api.get("/v1/workspaces/team-b/jobs", headers=b_ci).status_code == 200
    member = bearer(make(api, "member", "team-a", "m"))
    assert api.delete("/v1/tokens/m", headers=member).status_code == 403


def test_the_last_cluster_admin_token_cannot_be_revoked(api: TestClient) -> None:
    r = api.delete("/v1/tokens/local-admin", headers=ADMIN)
    assert r.status_code == 409 and "last cluster-admin token" in r.json()["error"]["message"]
    assert api.get("/v1/whoami", headers=ADMIN).status_code == 200
    spare = bearer(make(api, "admin", None, "spare"))
    assert api.delete("/v1/tokens/local-admin", headers=spare).status_code == 204
    assert api.get("/v1/whoami", headers=ADMIN).status_code == 401
    assert api.delete("/v1/tokens/spare", headers=spare).status_code == 409


def test_a_cluster_admin_is_told_where_a_name_lives(api: TestClient) -> None:
    workspaces(api, "team-a")
    make(api, "member", "team-a", "ci")
    r = api.delete("/v1/tokens/ci", headers=ADMIN)
    assert r.status_code == 404 and "team-a" in r.json()["error"]["message"]
    assert api.delete("/v1/tokens/ci?workspace=team-a", headers=ADMIN).status_code == 204


def test_names_are_unique_per_workspace_and_among_cluster_tokens(api: TestClient) -> None:
    workspaces(api, "team-a", "team-b")
    make(api, "member", "team-a", "ci")
    make(api, "member", "team-b", "ci")
    dup = api.post(
        "/v1/tokens", json={"role": "viewer", "workspace": "team-a", "name": "ci"}, headers=ADMIN
    )
    assert dup.status_code == 409 and "already exists" in dup.json()["error"]["message"]
    make(api, "admin", None, "ops")
    again = api.post("/v1/tokens", json={"role": "admin", "name": "ops"}, headers=ADMIN)
    assert again.status_code == 409
    bad = api.post("/v1/tokens", json={"role": "admin", "name": "a/b"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["path"] == "name"


def test_another_workspace_looks_the_same_whether_it_exists_or_not(api: TestClient) -> None:
    workspaces(api, "team-a", "team-b")
    a_admin = bearer(make(api, "admin", "team-a"))
    answers = []
    for other in ("team-b", "no-such-team"):
        answers.append(
            [
                (r.status_code, r.json()["error"]["message"].replace(other, "X"))
                for r in (
                    api.get(f"/v1/workspaces/{other}/jobs", headers=a_admin),
                    api.get(f"/v1/workspaces/{other}/quota", headers=a_admin),
                    api.post(
                        "/v1/tokens", json={"role": "member", "workspace": other}, headers=a_admin
                    ),
                    api.get(f"/v1/tokens?workspace={other}", headers=a_admin),
                    api.delete(f"/v1/tokens/ci?workspace={other}", headers=a_admin),
                )
            ]
        )
    assert answers[0] == answers[1]
    assert {status for status, _ in answers[0]} == {403}


def test_node_addresses_are_for_cluster_admins_only(api: TestClient) -> None:
    inventory = {"hostname": "h", "cpus": 8, "memory_mb": 1000, "disk_mb": 1000}
    r = api.post(
        "/v1/agent/register", json={"join_token": "crj_join", "name": "n1", "inventory": inventory}
    )
    assert r.status_code == 200
    # The address an agent reports when it connects (its hello), set here directly.
    with api.app.state.cp.store.transaction() as session:  # type: ignore[attr-defined]
        session.execute(update(Node).values(address="10.1.2.3"))
    assert [n["address"] for n in api.get("/v1/nodes", headers=ADMIN).json()["nodes"]] == [
        "10.1.2.3"
    ]
    for role in ("admin", "member", "viewer"):
        nodes = api.get("/v1/nodes", headers=bearer(make(api, role, "default"))).json()["nodes"]
        assert [(n["name"], n["address"]) for n in nodes] == [("n1", None)]
