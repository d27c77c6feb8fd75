"""One workspace's broken endpoint cannot stop another's from being served."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.client import Client
from corral.spec.endpoint import EndpointSpec
from support.cluster import ADMIN_TOKEN, Cluster, wait_for

SERVE = ["python3", "-m", "http.server", "--bind", "127.0.0.1"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_server()
        c.agent("node-1")
        c.wait_node_ready("node-1")
        yield c
    finally:
        c.close()


def serving(name: str) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {
            "name": name,
            "command": 'exec python3 -m http.server --bind 127.0.0.1 "$PORT"',
            "readiness": {"path": "/"},
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )


@pytest.mark.parametrize("path", ["../../x", "/tmp/x", "a/../../b"])
def test_endpoint_files_are_checked_like_a_jobs(cluster: Cluster, path: str) -> None:
    body = {"name": "bad", "command": "true", "files": {path: "x"}}
    response = httpx.post(
        cluster.url + "/v1/workspaces/default/endpoints",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert "files" in response.text


def poison(cluster: Cluster, name: str, **changes: object) -> None:
    """Change a stored spec behind the API's back: as an older server accepted it, or a bug
    wrote it."""
    db = sqlite3.connect(cluster.root / "home" / "corral.db")
    with db:
        [(spec_text,)] = db.execute("SELECT spec FROM endpoints WHERE name = ?", (name,))
        spec = json.loads(spec_text)
        spec.update(changes)
        db.execute("UPDATE endpoints SET spec = ? WHERE name = ?", (json.dumps(spec), name))
    db.close()


def stored_reason(cluster: Cluster, name: str) -> str:
    db = sqlite3.connect(cluster.root / "home" / "corral.db")
    try:
        [(reason,)] = db.execute("SELECT reason FROM endpoints WHERE name = ?", (name,))
    finally:
        db.close()
    return str(reason or "")


@pytest.fixture
def teams(cluster: Cluster) -> Iterator[tuple[Client, Client]]:
    with cluster.client() as admin:
        admin.create_workspace("team-a")
        admin.create_workspace("team-b")
    with (
        Client(cluster.url, ADMIN_TOKEN, "team-a") as a,
        Client(cluster.url, ADMIN_TOKEN, "team-b") as b,
    ):
        yield a, b


def test_an_endpoint_stored_with_an_unsafe_file_stays_manageable_and_never_writes_it(
    cluster: Cluster, teams: tuple[Client, Client]
) -> None:
    a, b = teams
    # Accepted with 201 before endpoint files were checked: "../../x" and "/tmp/x".
    a.deploy_endpoint(serving("poisoned").model_copy(update={"min_replicas": 0}))
    poison(cluster, "poisoned", files={"../../escaped": "boom"}, min_replicas=1)
    assert set(a.get_endpoint("poisoned").spec.files) == {"../../escaped"}  # readable
    b.deploy_endpoint(serving("healthy"))
    wait_for(
        "team-b's endpoint to be ready",
        lambda: b.get_endpoint("healthy").ready_replicas == 1,
        timeout=60,
    )

    def failed_replica_logs() -> str:
        jobs = [j for j in a.list_jobs() if j.name.startswith("poisoned-") and j.state == "failed"]
        return "".join(a.job_logs(j.name).data for j in jobs)

    wait_for(
        "the poisoned endpoint's replica to fail, saying why",
        lambda: "must be a relative path" in failed_replica_logs(),
        timeout=60,
    )
    assert not list((cluster.root / "agents").rglob("escaped"))
    view = a.get_endpoint("poisoned")
    assert set(view.spec.files) == {"../../escaped"}
    assert a.delete_endpoint("poisoned").state == "deleting"
    wait_for("the poisoned endpoint to be gone", lambda: a.list_endpoints() == [])


def test_an_unreadable_endpoint_is_quarantined_and_the_others_are_served(
    cluster: Cluster, teams: tuple[Client, Client]
) -> None:
    a, b = teams
    a.deploy_endpoint(serving("poisoned"))
    poison(cluster, "poisoned", command=None)  # neither command, entrypoint nor app
    b.deploy_endpoint(serving("healthy"))
    wait_for(
        "team-b's endpoint to be ready",
        lambda: b.get_endpoint("healthy").ready_replicas == 1,
        timeout=60,
    )
    wait_for(
        "the unreadable endpoint's status to say why",
        lambda: "could not reconcile" in stored_reason(cluster, "poisoned"),
    )
    # And the controller keeps working: a later change is still picked up.
    b.update_endpoint("healthy", serving("healthy").model_copy(update={"min_replicas": 2}))
    wait_for(
        "team-b's endpoint to scale to two",
        lambda: b.get_endpoint("healthy").ready_replicas == 2,
        timeout=60,
    )
    assert "ValidationError" in stored_reason(cluster, "poisoned")
