"""Node pools over the API and the CLI (the real app in-process, SQLite and PostgreSQL):
create checked against the catalog, ls/get, scale, delete refused while nodes remain and
drained with --force; the cost line of `corral job get`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.server.store.tables import Node, PoolInstance
from support.app import in_process
from support.cli import Cli
from support.cluster import wait_for
from support.store import add_run, register_node

ADMIN = {"Authorization": "Bearer crl_admin"}
AWS = {"name": "p5", "provider": "aws", "type": "p5.48xlarge", "region": "us-east-1", "max": 8}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path, allow_local_pools=True) as client:
        yield client


def test_a_local_pool_is_refused_unless_the_server_allows_it(
    database_url: str, tmp_path: Path
) -> None:
    body = {"name": "fake", "provider": "local", "type": "fake-h100x8", "max": 2}
    with in_process(database_url, tmp_path) as api:
        r = api.post("/v1/pools", json=body, headers=ADMIN)
        assert r.status_code == 403, r.text
        message = r.json()["error"]["message"]
        assert "does not allow them" in message and "CORRAL_ALLOW_LOCAL_POOLS=1" in message
        assert api.get("/v1/pools", headers=ADMIN).json()["pools"] == []
        # Other providers are not affected.
        assert api.post("/v1/pools", json=AWS, headers=ADMIN).status_code == 201


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.server.config import ServerOptions, SettingError

    monkeypatch.delenv("CORRAL_ALLOW_LOCAL_POOLS", raising=False)
    assert not ServerOptions.from_env().allow_local_pools
    monkeypatch.setenv("CORRAL_ALLOW_LOCAL_POOLS", "1")
    assert ServerOptions.from_env().allow_local_pools
    monkeypatch.setenv("CORRAL_ALLOW_LOCAL_POOLS", "maybe")
    with pytest.raises(SettingError, match="CORRAL_ALLOW_LOCAL_POOLS: expected 1 or 0"):
        ServerOptions.from_env()


def test_a_pool_may_set_no_label_the_server_binds_to_its_nodes() -> None:
    from corral.spec.pool import RESERVED_LABELS
    from corral.wire.api import BOUND_LABELS

    # A pool sets the topology keys itself too (provider, region, zone), so a pool's own
    # labels may not name them either.
    assert BOUND_LABELS <= RESERVED_LABELS
    assert {"provider", "region", "zone"} == RESERVED_LABELS - BOUND_LABELS


def test_create_get_ls_scale_delete(api: TestClient) -> None:
    r = api.post("/v1/pools", json={**AWS, "spot": True, "labels": {"team": "llm"}}, headers=ADMIN)
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["spec"]["spot"] and view["price_per_hour"] == 39.33  # the catalog's spot price
    assert (view["gpus_per_node"], view["gpu_model"], view["nodes"]) == (8, "H100", 0)
    assert [e["kind"] for e in view["events"]] == ["create"]
    assert [p["spec"]["name"] for p in api.get("/v1/pools", headers=ADMIN).json()["pools"]] == [
        "p5"
    ]
    r = api.patch("/v1/pools/p5", json={"min": 2, "max": 3}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["spec"]["min"], r.json()["spec"]["max"]) == (2, 3)
    assert r.json()["events"][0]["text"] == "scaled to min 2, max 3 by local-admin"
    r = api.post("/v1/pools", json=AWS, headers=ADMIN)
    assert r.status_code == 409 and "already exists" in r.json()["error"]["message"]
    # Scaled to 0 first: the controller must not launch into AWS from a test.
    api.patch("/v1/pools/p5", json={"min": 0}, headers=ADMIN)
    assert api.delete("/v1/pools/p5", headers=ADMIN).status_code == 204
    assert api.get("/v1/pools/p5", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"type": "p9.huge"}, "type", "known types: g5.12xlarge"),
        ({"provider": "gcp"}, "provider", "expected one of: aws, local, ssh"),
        ({"min": 5, "max": 2}, "", "min (5) must not be more than max (2)"),
        ({"spare": 3, "max": 2}, "", "spare (3) must not be more than max (2)"),
        ({"idle_after": "soon"}, "idle_after", "not a duration"),
        ({"labels": {"pool": "x"}}, "labels", "set by corral"),
        ({"labels": {"spot": "true"}}, "labels", "'spot' is set by corral on pool nodes (use spot"),
        ({"labels": {"ssh-host": "10.0.0.9"}}, "labels", "'ssh-host' is set by corral"),
        ({"labels": {"price-per-hour": "0"}}, "labels", "(use price, --price)"),
        ({"name": "Bad_Name"}, "name", "not a valid pool name"),
        ({"region": "local"}, "region", "regions with one: us-east-1, us-west-2"),
        ({"type": "p5e.48xlarge", "spot": True}, "region", "no spot price for p5e.48xlarge"),
    ],
)
def test_bad_pool_is_one_clear_422(
    api: TestClient, change: dict[str, object], field: str, words: str
) -> None:
    r = api.post("/v1/pools", json={**AWS, **change}, headers=ADMIN)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert words in error["message"]
    if field:
        assert any(f["path"].endswith(field) for f in error["fields"]), error


def _node(api: TestClient, name: str, bound: dict[str, str]) -> str:
    """Node `name` (8 GPUs) with the labels a join token bound to it: its agent cannot set
    these keys itself (wire.api.BOUND_LABELS)."""
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    now = api.app.state.cp.clock.now()  # type: ignore[attr-defined]
    node_id = register_node(store, name, gpus=8)
    with store.transaction() as session:
        node = session.get(Node, node_id)
        assert node is not None
        node.labels = {**(node.labels or {}), **bound}
        # Alive and just joined on the running server's clock: its controllers must not
        # find it silent (lost) or idle since 1970 before the test acts on it.
        node.registered_at = node.last_heartbeat_at = now
    return node_id


def _member(api: TestClient, pool: str, name: str) -> str:
    """A node of `pool` that joined, as the controller's rows would say."""
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    now = api.app.state.cp.clock.now()  # type: ignore[attr-defined]
    node_id = _node(api, name, {"pool": pool})
    with store.transaction() as session:
        session.add(
            PoolInstance(
                id=name,
                pool=pool,
                node_name=name,
                node_id=node_id,
                state="joined",
                launched_at=now,
                joined_at=now,
                price_per_hour=16.0,
            )
        )
    return node_id


def test_delete_is_refused_while_nodes_remain_and_force_releases_them(api: TestClient) -> None:
    body = {"name": "fake", "provider": "local", "type": "fake-h100x8", "max": 2}
    assert api.post("/v1/pools", json=body, headers=ADMIN).status_code == 201
    _member(api, "fake", "fake-a")  # no agent behind it: the provider has nothing to stop
    r = api.delete("/v1/pools/fake", headers=ADMIN)
    assert r.status_code == 409
    assert r.json()["error"]["message"] == (
        "node pool 'fake' still has 1 node(s): scale it to 0 and wait, or delete it with "
        "--force (drains and releases them)"
    )
    r = api.delete("/v1/pools/fake", params={"force": "true"}, headers=ADMIN)
    assert r.status_code == 202
    # The pool controller releases the drained node, deletes it, then the pool.
    wait_for(
        "the pool to go",
        lambda: api.get("/v1/pools/fake", headers=ADMIN).status_code == 404,
        timeout=30,
    )
    nodes = api.get("/v1/nodes", headers=ADMIN).json()["nodes"]
    assert all(n["name"] != "fake-a" for n in nodes)
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    with store.read() as session:
        row = session.scalars(select(PoolInstance).where(PoolInstance.node_name == "fake-a")).one()
        # A pool being deleted has room for no node: its idle ones go at once (a drained
        # node is not ready: released as such, core/pools.py).
        reason = row.reason or ""
        assert row.state == "terminated", reason
        assert "above its max_nodes 0" in reason or "not ready and idle" in reason, reason


def test_a_static_pool_counts_its_hosts_and_force_drains_them_and_goes(api: TestClient) -> None:
    body = {"name": "racks", "provider": "ssh", "type": "any"}
    assert api.post("/v1/pools", json=body, headers=ADMIN).status_code == 201
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    _node(api, "host-1", {"pool": "racks"})
    _node(api, "host-2", {"pool": "elsewhere"})
    view = api.get("/v1/pools/racks", headers=ADMIN).json()
    assert (view["static"], view["nodes"]) == (True, 1)
    assert api.delete("/v1/pools/racks", headers=ADMIN).status_code == 409
    assert api.delete("/v1/pools/racks", params={"force": "true"}, headers=ADMIN).status_code == 204
    with store.read() as session:
        node = session.scalars(select(Node).where(Node.name == "host-1")).one()
        assert node.condition == "cordoned"  # drained; `corral node remove` uninstalls it


def test_cli_pool_commands(cli: Cli) -> None:
    result = cli(
        "pool", "create", "h100", "--provider", "aws", "--type", "p5.48xlarge",
        "--region", "us-east-1", "--max", "4", "--label", "team=llm",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created pool h100: aws p5.48xlarge in us-east-1 (8 x H100)" in result.output
    result = cli("pool", "ls")
    assert result.exit_code == 0 and "h100" in result.output and "$98.32/h" in result.output
    result = cli("pool", "scale", "h100", "--max", "6")
    assert result.exit_code == 0 and "min 0, max 6" in result.output
    result = cli("pool", "scale", "h100", "--spare", "2")
    assert result.exit_code == 0 and "min 0, max 6, 2 spare" in result.output
    result = cli("pool", "get", "h100")
    assert result.exit_code == 0, result.output
    assert "scaled to min 0, max 6, 2 spare" in result.output and "team=llm" in result.output
    bad = cli("pool", "create", "x", "--provider", "aws", "--type", "p9", "--region", "us-east-1")
    assert bad.exit_code != 0 and "unknown instance type 'p9'" in bad.output
    assert "Traceback" not in bad.output
    local = ("pool", "create", "x", "--provider", "local", "--type", "fake-h100x1")
    bad = cli(*local, "--min", "3", "--max", "1")
    assert bad.exit_code == 2 and "min (3) must not be more than max (1)" in bad.output
    bad = cli(*local, "--label", "nokey")
    assert bad.exit_code == 2 and "--label 'nokey': expected KEY=VALUE" in bad.output
    bad = cli(*local, "--label", "spot=true")  # the flag is named, not the spec's field
    assert bad.exit_code == 2 and "--label: label 'spot' is set by corral" in bad.output
    bad = cli("pool", "create", "x", "--type", "p5.48xlarge")  # no default provider
    assert bad.exit_code == 2 and "give --provider" in bad.output
    assert cli("pool", "delete", "h100").exit_code == 0
    assert "h100" not in cli("pool", "ls").output


def test_job_get_shows_cost(cli: Cli) -> None:
    server = cli.server
    r = server.post(
        "/v1/pools",
        json={"name": "racks", "provider": "ssh", "type": "any", "price": 16.0},
        headers=ADMIN,
    )
    assert r.status_code == 201
    node_id = _member(server, "racks", "racks-a")  # 8 GPUs at $16/h: $2 per GPU-hour
    _job_on(server, node_id, 0.0)
    result = cli("job", "get", "train")
    assert result.exit_code == 0, result.output
    assert "$12.40 (6.2 GPU-hours)" in result.output
    job = cli.sdk().get_job("train")
    assert job.cost is not None and job.cost.usd == 12.4 and job.cost.gpu_hours == 6.2


def test_cli_workspace_usage(cli: Cli) -> None:
    server = cli.server
    store = server.app.state.cp.store  # type: ignore[attr-defined]
    node_id = _node(server, "priced", {"price-per-hour": "16"})
    now = server.app.state.cp.clock.now()  # type: ignore[attr-defined]
    with store.transaction() as session:
        from corral.server.store.tables import Workspace

        ws = session.scalars(select(Workspace).where(Workspace.name == "default")).one()
        add_run(session, ws.id, node_id, 2, now - 7200)
    # Running for 2 h on 2 GPUs at $2/GPU-hour; the last hour only with --since 1h.
    result = cli("workspace", "usage", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["usage"]
    assert row["workspace"] == "default" and row["jobs"] == 1
    assert row["gpu_hours"] == pytest.approx(2.0, abs=0.01)
    assert row["usd"] == pytest.approx(4.0, abs=0.02)
    result = cli("workspace", "usage", "default")
    assert result.exit_code == 0, result.output
    assert "default" in result.output and "$8.0" in result.output  # the whole week
    bad = cli("workspace", "usage", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since 'yesterday'" in bad.output


def _job_on(api: TestClient, node_id: str, started: float) -> None:
    """Job 'train' of workspace default: 4 GPUs of `node_id` for 1.55 h (6.2 GPU-hours)."""
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    with store.transaction() as session:
        from corral.server.store.tables import Workspace

        ws = session.scalars(select(Workspace).where(Workspace.name == "default")).one()
        add_run(session, ws.id, node_id, 4, started, started + 5580.0)


def test_cost_survives_the_node_and_the_pool_being_deleted(api: TestClient) -> None:
    body = {"name": "racks", "provider": "ssh", "type": "any"}  # no price of its own
    assert api.post("/v1/pools", json=body, headers=ADMIN).status_code == 201
    node_id = _member(api, "racks", "racks-a")  # launched at $16/h: $2 per GPU-hour
    now = api.app.state.cp.clock.now()  # type: ignore[attr-defined]
    _job_on(api, node_id, now - 7200)
    view = api.get("/v1/workspaces/default/jobs/train", headers=ADMIN).json()
    assert view["cost"]["usd"] == 12.4
    # The node goes (its row is renamed, kept for its replicas), then its pool.
    assert api.delete("/v1/nodes/racks-a", headers=ADMIN).status_code == 204
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    with store.transaction() as session:
        row = session.scalars(select(PoolInstance).where(PoolInstance.node_id == node_id)).one()
        row.state = "terminated"
    assert api.delete("/v1/pools/racks", headers=ADMIN).status_code == 204
    view = api.get("/v1/workspaces/default/jobs/train", headers=ADMIN).json()
    assert view["cost"] == {"gpu_hours": 6.2, "usd": 12.4, "unpriced_gpu_hours": 0.0}
    usage = api.get("/v1/workspaces/default/usage", headers=ADMIN).json()
    assert (usage["gpu_hours"], usage["usd"]) == (6.2, 12.4)


def test_an_instance_without_its_node_id_is_priced_by_the_node_name(api: TestClient) -> None:
    """Rows written before the node's id was recorded: found by name while the node lives."""
    body = {"name": "racks", "provider": "ssh", "type": "any"}  # no price of its own
    assert api.post("/v1/pools", json=body, headers=ADMIN).status_code == 201
    node_id = _member(api, "racks", "racks-a")
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    with store.transaction() as session:
        session.scalars(select(PoolInstance)).one().node_id = None
    _job_on(api, node_id, api.app.state.cp.clock.now() - 7200)  # type: ignore[attr-defined]
    view = api.get("/v1/workspaces/default/jobs/train", headers=ADMIN).json()
    assert view["cost"]["usd"] == 12.4  # the launch's $16/h, not unknown


@pytest.mark.parametrize("since", ["nan", "inf", "-inf"])
def test_usage_since_must_be_a_finite_time(api: TestClient, since: str) -> None:
    for path in ("/v1/usage", "/v1/workspaces/default/usage"):
        r = api.get(path, params={"since": since}, headers=ADMIN)
        assert r.status_code == 422, (path, r.text)
        assert "since" in r.text
