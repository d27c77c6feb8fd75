"""Review finding 4: labels that prices, pool membership and `corral node remove`'s SSH
target rest on (wire.api.BOUND_LABELS) come from the join token a node registered with,
never from the node: neither at registration nor in any later hello."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.server.runtime import ControlPlane
from corral.server.services import nodes
from corral.wire import agent as wire
from support.app import ADMIN_TOKEN, in_process
from support.cli import Cli

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BOUND = {
    "provider": "ssh",
    "ssh-host": "10.0.0.7",
    "ssh-port": "22",
    "ssh-user": "root",
    "ssh-install-dir": "/opt/corral",
    "pool": "racks",
    "rack": "r7",
}
# What a compromised agent claims: another host to SSH to, another pool, a price.
CLAIMED = {
    "ssh-host": "10.0.0.99",
    "ssh-install-dir": "/etc",
    "pool": "gpu-west",
    "price-per-hour": "0",
    "region": "us-east-1",
    "team": "vision",
}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def _inventory(labels: dict[str, str]) -> dict[str, Any]:
    return {"hostname": "h", "cpus": 8, "memory_mb": 1000, "disk_mb": 1000, "labels": labels}


def _token(api: TestClient, labels: dict[str, str] | None) -> str:
    made = api.post("/v1/join-tokens", headers=ADMIN, json={"max_uses": 2, "labels": labels})
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


def _register(api: TestClient, token: str, labels: dict[str, str], **extra: str) -> Any:
    body = {"join_token": token, "name": "n1", "inventory": _inventory(labels), **extra}
    answer = api.post("/v1/agent/register", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _labels(api: TestClient) -> dict[str, str]:
    (node,) = api.get("/v1/nodes", headers=ADMIN).json()["nodes"]
    labels: dict[str, str] = node["labels"]
    return labels


def _hello(api: TestClient, node_id: str, labels: dict[str, str]) -> None:
    cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
    inventory = wire.Inventory.model_validate(_inventory(labels))
    with cp.store.transaction() as session:
        nodes.connect(session, node_id, wire.Hello(inventory=inventory, address="h"), 5.0)


def test_the_token_s_labels_win_at_registration_and_in_every_hello(api: TestClient) -> None:
    registered = _register(api, _token(api, BOUND), CLAIMED)
    # The token's labels, and the agent's own ones that are not bound keys (team, and the
    # topology key region); its claims to another ssh host, pool and price are dropped.
    assert _labels(api) == {**BOUND, "team": "vision", "region": "us-east-1"}
    # Later, the bound keys stay; the others (provider, rack, team) are the agent's to report.
    _hello(api, registered["node_id"], {**CLAIMED, "team": "nlp", "provider": "aws"})
    reserved = {k: v for k, v in BOUND.items() if k not in ("rack", "provider")}
    assert _labels(api) == {**reserved, "team": "nlp", "provider": "aws", "region": "us-east-1"}
    # A re-registration proving it is the node (its node token) with a plain join token
    # keeps what the first token bound.
    _register(api, _token(api, None), CLAIMED, node_token=registered["node_token"])
    assert _labels(api) == {**reserved, "team": "vision", "region": "us-east-1"}


def test_a_node_joined_with_a_plain_token_cannot_give_itself_bound_labels(
    api: TestClient,
) -> None:
    registered = _register(api, _token(api, None), CLAIMED)
    assert _labels(api) == {"team": "vision", "region": "us-east-1"}
    _hello(api, registered["node_id"], {**CLAIMED, "spot": "true", "zone": "a"})
    assert _labels(api) == {"team": "vision", "region": "us-east-1", "zone": "a"}


def test_join_token_labels_are_validated_and_admin_only(api: TestClient) -> None:
    bad = api.post("/v1/join-tokens", headers=ADMIN, json={"labels": {"bad key": "x"}})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["path"].startswith("labels")
    member = api.post(
        "/v1/tokens", headers=ADMIN, json={"role": "member", "workspace": "default"}
    ).json()["token"]
    denied = api.post(
        "/v1/join-tokens",
        headers={"Authorization": f"Bearer {member}"},
        json={"labels": {"pool": "gpu-west"}},
    )
    assert denied.status_code == 403


def _join_directly(server: TestClient, name: str, labels: dict[str, str], bound: Any) -> None:
    cp: ControlPlane = server.app.state.cp  # type: ignore[attr-defined]
    inventory = wire.Inventory.model_validate(_inventory(labels))
    request = wire.RegisterRequest(join_token="crj_join", name=name, inventory=inventory)
    with cp.store.transaction() as session:
        nodes.register_node(session, request, 1.0, bound=bound)


def test_node_remove_never_sshes_where_a_node_says(server: TestClient, cli: Cli) -> None:
    """A node that claims ssh-* labels itself was not added over ssh: `node remove` deletes
    it without connecting anywhere (it would be the admin's key and sudo on that host)."""
    _join_directly(server, "liar", {**BOUND, "provider": "ssh"}, None)
    done = cli("node", "remove", "liar", "--known-hosts", "/nonexistent/known_hosts")
    assert done.exit_code == 0, done.output
    assert "liar was not added over ssh" in done.output
    assert [n["name"] for n in server.get("/v1/nodes", headers=ADMIN).json()["nodes"]] == []


def test_node_remove_refuses_a_pool_s_cloud_node(server: TestClient, cli: Cli) -> None:
    _join_directly(server, "p-1", {}, {"pool": "gpu", "provider": "aws"})
    done = cli("node", "remove", "p-1")
    assert done.exit_code == 2, done.output
    lines = [ln for ln in done.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "corral pool scale gpu" in lines[0], done.output
    assert [n["name"] for n in server.get("/v1/nodes", headers=ADMIN).json()["nodes"]] == ["p-1"]
