"""`corral token ls/revoke` and `corral node join-token create/ls/revoke` against the real
app in-process (SQLite): readable tables, JSON, one-line errors and their exit codes."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from support.app import ADMIN_TOKEN
from support.cli import Cli


def test_token_ls_shows_a_table_and_json_without_secrets(cli: Cli) -> None:
    assert cli("workspace", "create", "team-a").exit_code == 0
    made = cli("token", "create", "--role", "member", "-w", "team-a", "--name", "ci")
    assert made.exit_code == 0
    secret = made.stdout.strip()
    result = cli("token", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "WORKSPACE", "CREATED"]
    assert any(line.split()[:3] == ["ci", "member", "team-a"] for line in lines)
    assert any(line.split()[:3] == ["local-admin", "admin", "(cluster)"] for line in lines)
    as_json = cli("token", "ls", "--json")
    listed = json.loads(as_json.stdout)["tokens"]
    assert {(t["name"], t["workspace"]) for t in listed} == {
        ("local-admin", None),
        ("ci", "team-a"),
    }
    assert secret not in as_json.stdout + result.stdout and secret[-4:] not in as_json.stdout


def test_token_revoke_and_its_errors(cli: Cli) -> None:
    assert cli("workspace", "create", "team-a").exit_code == 0
    secret = cli("token", "create", "--role", "member", "-w", "team-a", "--name", "ci").stdout
    assert cli("whoami", token=secret.strip()).exit_code == 0
    done = cli("token", "revoke", "ci", "-w", "team-a")
    assert done.exit_code == 0 and "revoked token ci" in done.stderr
    assert cli("whoami", token=secret.strip()).exit_code == 1
    missing = cli("token", "revoke", "ci", "-w", "team-a")
    assert missing.exit_code == 1
    assert missing.stderr == "error: token 'ci' not found in workspace 'team-a'\n"
    last = cli("token", "revoke", "local-admin")
    assert last.exit_code == 1 and len(last.stderr.strip().splitlines()) == 1
    assert "last cluster-admin token" in last.stderr


def test_join_tokens_from_the_cli(cli: Cli, server: TestClient) -> None:
    made = cli("node", "join-token", "create", "--name", "rack-1", "--ttl", "2h", "--max-uses", "1")
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("crj_") and "rack-1" in made.stderr and "2h" in made.stderr
    listed = cli("node", "join-token", "ls")
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["rack-1"][1:3] == ["active", "0/1"]
    assert rows["bootstrap"][1:4] == ["active", "0/∞", "never"]
    as_json = json.loads(cli("node", "join-token", "ls", "--json").stdout)["join_tokens"]
    assert {t["name"] for t in as_json} == {"rack-1", "bootstrap"}
    assert all(t["token"] is None for t in as_json)
    assert cli("node", "join-token", "revoke", "rack-1").exit_code == 0
    inventory = {"hostname": "h", "cpus": 1, "memory_mb": 1, "disk_mb": 1}
    r = server.post(
        "/v1/agent/register", json={"join_token": secret, "name": "n", "inventory": inventory}
    )
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    bad = cli("node", "join-token", "create", "--ttl", "soon")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --ttl:")
    forever = cli("node", "join-token", "create", "--ttl", "never", "--json")
    assert json.loads(forever.stdout)["expires_at"] is None


def test_a_join_token_from_the_cli_binds_labels_to_its_nodes(cli: Cli, server: TestClient) -> None:
    made = cli("node", "join-token", "create", "--label", "pool=lab", "--label", "rack=r2")
    assert made.exit_code == 0, made.output
    inventory = {
        "hostname": "h",
        "cpus": 1,
        "memory_mb": 1,
        "disk_mb": 1,
        "labels": {"pool": "elsewhere", "team": "a"},
    }
    body = {"join_token": made.stdout.strip(), "name": "n", "inventory": inventory}
    assert server.post("/v1/agent/register", json=body).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    labels = server.get("/v1/nodes", headers=admin).json()["nodes"][0]["labels"]
    # The token's pool wins over the node's own claim; its own unbound labels stay.
    assert labels == {"pool": "lab", "rack": "r2", "team": "a"}
    bad = cli("node", "join-token", "create", "--label", "nokey")
    assert bad.exit_code == 2 and "--label 'nokey': expected KEY=VALUE" in bad.output
