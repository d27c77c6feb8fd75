"""Cordon and uncordon: an operator keeps a node from new work and gives it back.

corral cordons a node by itself when its hardware is suspect (core.recovery); without
these, nothing could give such a node back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from corral.server.store.tables import Node
from support.app import in_process
from support.cli import ADMIN, Cli, scheduled_reason, submit_job
from support.cluster import wait_for
from support.store import register_node

NODES = "/v1/nodes"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        register_node(client.app.state.cp.store, "n1", gpus=2)  # type: ignore[attr-defined]
        yield client


def _condition(api: TestClient, name: str) -> str:
    nodes = api.get(NODES, headers=ADMIN).json()["nodes"]
    return str(next(n["condition"] for n in nodes if n["name"] == name))


def test_an_admin_cordons_and_uncordons_a_node(api: TestClient) -> None:
    r = api.post(f"{NODES}/n1/cordon", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["condition"] == "cordoned" == _condition(api, "n1")
    assert api.post(f"{NODES}/n1/cordon", headers=ADMIN).status_code == 200  # idempotent
    r = api.post(f"{NODES}/n1/uncordon", headers=ADMIN)
    assert r.status_code == 200 and r.json()["condition"] == "ready" == _condition(api, "n1")


def test_what_waited_for_a_cordoned_node_is_placed_once_it_is_uncordoned(
    api: TestClient, tmp_path: Path
) -> None:
    assert api.post(f"{NODES}/n1/cordon", headers=ADMIN).status_code == 200
    submit_job(api, "train", resources={"gpus": "H100:1"})
    cli = Cli(api, tmp_path)
    assert "none is connected and taking work" in scheduled_reason(cli, "train")
    assert cli.sdk().get_job("train").state == "pending"
    assert api.post(f"{NODES}/n1/uncordon", headers=ADMIN).status_code == 200
    wait_for("the job to be placed", lambda: cli.sdk().get_job("train").state != "pending")


def test_only_a_cluster_admin_may_cordon(api: TestClient) -> None:
    r = api.post("/v1/tokens", json={"role": "admin", "workspace": "default"}, headers=ADMIN)
    workspace_admin = {"Authorization": f"Bearer {r.json()['token']}"}
    for verb in ("cordon", "uncordon"):
        r = api.post(f"{NODES}/n1/{verb}", headers=workspace_admin)
        assert r.status_code == 403, r.text
        assert f"only a cluster admin can {verb} a node" in r.json()["error"]["message"]
    assert _condition(api, "n1") == "ready"


def test_unknown_nodes_get_clear_errors_and_a_lost_node_stays_cordoned(api: TestClient) -> None:
    r = api.post(f"{NODES}/nope/cordon", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["message"] == "node 'nope' not found"
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    with store.transaction() as session:
        session.execute(update(Node).values(condition="lost"))
    # Cordoning a lost node keeps it out when it comes back; it stays lost meanwhile.
    r = api.post(f"{NODES}/n1/cordon", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (
        r.json()["condition"] == "lost" and r.json()["cordon_reason"] == "cordoned by local-admin"
    )
    r = api.post(f"{NODES}/n1/uncordon", headers=ADMIN)
    assert r.status_code == 200 and r.json()["cordon_reason"] is None
    assert _condition(api, "n1") == "lost"


def test_the_cli_cordons_in_one_line_and_says_how_to_undo(cli: Cli, server: TestClient) -> None:
    register_node(server.app.state.cp.store, "n1")  # type: ignore[attr-defined]
    done = cli("node", "cordon", "n1")
    assert done.exit_code == 0, done.output
    assert "node n1 is cordoned" in done.output and "corral node uncordon n1" in done.output
    done = cli("node", "uncordon", "n1", "--json")
    assert done.exit_code == 0 and '"condition": "ready"' in done.stdout
    missing = cli("node", "cordon", "nope")
    assert missing.exit_code != 0
    assert missing.output.strip().splitlines()[0] == "error: node 'nope' not found"
