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


def test_a_poisoned_endpoint_is_quarantined_and_the_others_are_served(cluster: Cluster) -> None:
    with cluster.client() as admin:
        admin.create_workspace("team-a")
        admin.create_workspace("team-b")
        a = Client(cluster.url, ADMIN_TOKEN, "team-a")
        b = Client(cluster.url, ADMIN_TOKEN, "team-b")
    with a, b:
        a.deploy_endpoint(serving("poisoned"))
        # A spec stored before validation was this strict (or written by a bug): it no
        # longer loads, and every pass over it raises.
        db = sqlite3.connect(cluster.root / "home" / "corral.db")
        with db:
            [(spec_text,)] = db.execute("SELECT spec FROM endpoints WHERE name = 'poisoned'")
            spec = json.loads(spec_text)
            spec["files"] = {"../../etc/x": "boom"}
            db.execute("UPDATE endpoints SET spec = ? WHERE name = 'poisoned'", (json.dumps(spec),))
        db.close()
        b.deploy_endpoint(serving("healthy"))
        wait_for(
            "team-b's endpoint to be ready",
            lambda: b.get_endpoint("healthy").ready_replicas == 1,
            timeout=60,
        )

        def poisoned_reason() -> str:
            db = sqlite3.connect(cluster.root / "home" / "corral.db")
            try:
                [(reason,)] = db.execute("SELECT reason FROM endpoints WHERE name = 'poisoned'")
            finally:
                db.close()
            return reason or ""

        wait_for(
            "the poisoned endpoint's status to say why",
            lambda: "could not reconcile" in poisoned_reason(),
        )
        # And the controller keeps working: a later change is still picked up.
        b.update_endpoint("healthy", serving("healthy").model_copy(update={"min_replicas": 2}))
        wait_for(
            "team-b's endpoint to scale to two",
            lambda: b.get_endpoint("healthy").ready_replicas == 2,
            timeout=60,
        )
        assert "ValidationError" in poisoned_reason()
