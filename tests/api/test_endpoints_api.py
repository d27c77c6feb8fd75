"""The endpoint API in-process, on SQLite and PostgreSQL: specs, revisions, routes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
EP = "/v1/workspaces/default/endpoints"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    gateway = "http://gw.example:8080"
    with in_process(database_url, tmp_path, gateway_public_url=gateway) as client:
        yield client


def test_a_bad_endpoint_spec_is_a_422_naming_every_field(api: TestClient) -> None:
    r = api.post(
        EP,
        json={
            "command": "serve",
            "min_replicas": 3,
            "max_replicas": 1,
            "readiness": {"path": "health", "timeout": "soon"},
            "env": {"PORT": "9"},
            "autoscale": True,
        },
        headers=ADMIN,
    )
    assert r.status_code == 422
    fields = {f["path"] for f in r.json()["error"]["fields"]}
    assert fields == {"readiness.path", "readiness.timeout", "env", "autoscale"}
    both = api.post(EP, json={"command": "a", "app": "app.py:A"}, headers=ADMIN)
    assert both.status_code == 422 and "exactly one of" in both.text
    assert api.get(EP, headers=ADMIN).json()["endpoints"] == []


def test_deploy_update_and_delete_with_revisions(api: TestClient) -> None:
    spec = {"name": "emb", "app": "app.py:Embedder", "min_replicas": 0, "max_replicas": 2}
    r = api.post(EP, json=spec, headers=ADMIN)
    assert r.status_code == 201, r.text
    view = r.json()
    assert (view["revision"], view["state"], view["url"]) == (
        1,
        "scaled-to-zero",
        "http://gw.example:8080/ep/emb/",
    )
    dup = api.post(EP, json=spec, headers=ADMIN)
    assert dup.status_code == 409 and "endpoint update" in dup.json()["error"]["message"]
    same = api.put(f"{EP}/emb", json=spec, headers=ADMIN).json()
    assert same["revision"] == 1  # nothing changed: no rollout
    changed = api.put(f"{EP}/emb", json={**spec, "env": {"X": "1"}}, headers=ADMIN).json()
    assert changed["revision"] == 2
    gone = api.delete(f"{EP}/emb", headers=ADMIN)
    assert gone.status_code == 202 and gone.json()["state"] == "deleting"


def test_endpoint_names_are_global_because_they_are_the_url(api: TestClient) -> None:
    api.post("/v1/workspaces", json={"name": "team-b"}, headers=ADMIN)
    assert api.post(EP, json={"name": "x", "command": "s"}, headers=ADMIN).status_code == 201
    other = api.post(
        "/v1/workspaces/team-b/endpoints", json={"name": "x", "command": "s"}, headers=ADMIN
    )
    assert other.status_code == 409 and "taken by another workspace" in other.text


def test_routes_are_for_admins_and_long_poll_until_they_change(api: TestClient) -> None:
    r = api.post("/v1/tokens", json={"role": "member", "workspace": "default"}, headers=ADMIN)
    member = {"Authorization": f"Bearer {r.json()['token']}"}
    assert api.get("/v1/gateway/routes", headers=member).status_code == 403
    first = api.get("/v1/gateway/routes", headers=ADMIN).json()
    assert first["endpoints"] == []
    started = time.monotonic()
    held = api.get(
        "/v1/gateway/routes", params={"after": first["version"], "wait": 1.2}, headers=ADMIN
    ).json()
    assert held["version"] == first["version"] and time.monotonic() - started >= 1.0
    api.post(EP, json={"name": "e", "command": "s", "auth": "workspace"}, headers=ADMIN)
    now = api.get("/v1/gateway/routes", params={"after": first["version"]}, headers=ADMIN).json()
    assert now["version"] > first["version"]
    (route,) = now["endpoints"]
    assert route["name"] == "e" and route["auth"] == "workspace" and route["token_sha256"]
    wake = api.post(
        "/v1/gateway/wake", json={"endpoint": "e", "workspace": "default", "held": 3}, headers=ADMIN
    )
    assert wake.status_code == 202


def test_a_new_or_revoked_token_reaches_the_gateways_at_once(api: TestClient) -> None:
    """The route table carries each workspace's token hashes; a token change pokes the long
    polls instead of waiting for their next look (`TOKEN=$(corral token create)` then curl)."""
    from support.cluster import wait_for

    routes = api.app.state.cp.routes  # type: ignore[attr-defined]
    before = routes.generation
    body = {"role": "member", "workspace": "default", "name": "gw"}
    made = api.post("/v1/tokens", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    wait_for("a poke for the new token", lambda: routes.generation > before, timeout=5)
    after_create = routes.generation
    gone = api.delete("/v1/tokens/gw", params={"workspace": "default"}, headers=ADMIN)
    assert gone.status_code == 204, gone.text
    wait_for("a poke for the revoked one", lambda: routes.generation > after_create, timeout=5)
