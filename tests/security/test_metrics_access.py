"""/metrics answers a cluster admin and a metrics token only; a metrics token reads
nothing else; only a cluster admin makes one, and only cluster-wide."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import in_process
from support.cli import ADMIN, Cli

NEEDS = "/metrics needs the admin role (cluster-wide) or the metrics role"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def token(
    api: TestClient, role: str, workspace: str | None, headers: dict[str, str] = ADMIN
) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=headers)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_a_metrics_token_reads_metrics_and_nothing_else(api: TestClient) -> None:
    r = api.post("/v1/tokens", json={"role": "metrics"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "metrics" and r.json()["workspace"] is None
    scraper = {"Authorization": f"Bearer {r.json()['token']}"}
    r = api.get("/metrics", headers=scraper)
    assert r.status_code == 200 and "corral_nodes" in r.text
    refused = [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/nodes"),
        ("GET", "/v1/status"),
        ("GET", "/v1/whoami"),
        ("GET", "/v1/workspaces"),
        ("GET", "/v1/workspaces/default/jobs"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/join-tokens"),
    ]
    for method, path in refused:
        r = api.request(method, path, headers=scraper, json={"role": "metrics"})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["message"] == "a metrics token reads /metrics and nothing else"
    # The cluster admin lists it among the cluster-wide tokens and can revoke it.
    listed = api.get("/v1/tokens", headers=ADMIN).json()["tokens"]
    name = next(t["name"] for t in listed if t["role"] == "metrics")
    assert api.delete(f"/v1/tokens/{name}", headers=ADMIN).status_code == 204
    assert api.get("/metrics", headers=scraper).status_code == 401


def test_the_cluster_admin_reads_metrics(api: TestClient) -> None:
    r = api.get("/metrics", headers=ADMIN)
    assert r.status_code == 200 and "corral_queue_length 0.0" in r.text


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_a_workspace_token_is_refused(api: TestClient, role: str) -> None:
    r = api.get("/metrics", headers=token(api, role, "default"))
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "forbidden" and error["message"].startswith(NEEDS)
    assert f"this token is {role} of workspace 'default'" in error["message"]


def test_no_token_or_a_wrong_one_is_unauthorized(api: TestClient) -> None:
    r = api.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = api.get("/metrics", headers={"Authorization": "Bearer crl_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("role", ["admin", "member"])
def test_only_a_cluster_admin_creates_a_metrics_token(api: TestClient, role: str) -> None:
    caller = token(api, role, "default")
    for body in ({"role": "metrics"}, {"role": "metrics", "workspace": "default"}):
        r = api.post("/v1/tokens", json=body, headers=caller)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == "only a cluster admin can create a metrics token"
    listed = api.get("/v1/tokens", headers=ADMIN).json()["tokens"]
    assert all(t["role"] != "metrics" for t in listed)


def test_a_metrics_token_is_cluster_wide(api: TestClient) -> None:
    r = api.post("/v1/tokens", json={"role": "metrics", "workspace": "default"}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["path"] == "workspace"
    assert "cluster-wide" in r.json()["error"]["message"]


def test_the_cli_creates_a_metrics_token(cli: Cli, server: TestClient) -> None:
    done = cli("token", "create", "--role", "metrics", "--name", "prometheus")
    assert done.exit_code == 0, done.output
    assert "created metrics token prometheus for the whole cluster" in done.output
    secret = done.stdout.strip()
    r = server.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and "corral_jobs" in r.text
