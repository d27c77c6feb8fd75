"""Workspace secrets: encrypted at rest, never shown back, only for their own workspace, and
delivered only in the environment of a replica that starts.

Against the real app in-process on SQLite and PostgreSQL, a real server with an agent for
the delivery end to end, and the CLI against the app in-process.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, Settings
from corral.server.runtime import ControlPlane
from corral.server.secretbox import SecretBox
from corral.server.services.assignments import build_assignments
from corral.server.store.tables import Base, Job, Replica
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec
from support.app import in_process
from support.cluster import Cluster, wait_for
from support.store import register_node

ADMIN = {"Authorization": "Bearer crl_admin"}
VALUE = "hf_Zq8secret-value-7d1f"  # what must never come back, nor lie in the database
WS = "/v1/workspaces"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path / "server") as client:
        yield client


def token(api: TestClient, role: str, workspace: str) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def team(api: TestClient, name: str) -> dict[str, dict[str, str]]:
    assert api.post(WS, json={"name": name}, headers=ADMIN).status_code == 201
    return {role: token(api, role, name) for role in ("viewer", "member", "admin")}


def put(api: TestClient, ws: str, name: str, value: str, headers: dict[str, str]) -> Any:
    return api.put(f"{WS}/{ws}/secrets/{name}", json={"value": value}, headers=headers)


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "command": 'printf %s "$HF_TOKEN" | sha256sum', **fields}


def dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row)
                for table in Base.metadata.sorted_tables
                for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()


def test_a_value_is_stored_encrypted_and_no_route_returns_it(
    api: TestClient, database_url: str
) -> None:
    a = team(api, "team-a")
    assert put(api, "team-a", "hf", "first", a["member"]).status_code == 201
    r = put(api, "team-a", "hf", VALUE, a["admin"])
    assert r.status_code == 200 and set(r.json()) == {"name", "created_at", "updated_at"}
    assert put(api, "team-a", "hf", "x", a["viewer"]).status_code == 403

    spec = job("train", secrets={"HF_TOKEN": "hf"}, env={"OTHER": "1"})
    r = api.post(f"{WS}/team-a/jobs", json=spec, headers=a["member"])
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["secrets"] == {"HF_TOKEN": "hf"}
    endpoint = {"name": "chat", "command": "serve", "secrets": {"HF_TOKEN": "hf"}}
    assert api.post(f"{WS}/team-a/endpoints", json=endpoint, headers=a["member"]).status_code == 201

    for who in ("viewer", "member", "admin"):
        headers = a[who]
        answers = [
            api.get(f"{WS}/team-a/secrets", headers=headers),
            api.get(f"{WS}/team-a/jobs", headers=headers),
            api.get(f"{WS}/team-a/jobs/train", headers=headers),
            api.get(f"{WS}/team-a/endpoints", headers=headers),
            api.get(f"{WS}/team-a/endpoints/chat", headers=headers),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert VALUE not in answer.text
        assert [s["name"] for s in answers[0].json()["secrets"]] == ["hf"]
        assert set(answers[0].json()["secrets"][0]) == {"name", "created_at", "updated_at"}
        assert answers[2].json()["spec"]["secrets"] == {"HF_TOKEN": "hf"}
    # No route reads one secret, whatever the method.
    assert api.get(f"{WS}/team-a/secrets/hf", headers=ADMIN).status_code in (404, 405)

    rows = dump_database(database_url)
    assert "'hf'" in rows  # the dump did read the secrets table
    assert VALUE not in rows and "first" not in rows
    if database_url.startswith("sqlite"):
        # Nor anywhere in the file: free pages, the write-ahead log.
        path = database_url.removeprefix("sqlite:///")
        sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        assert VALUE.encode() not in Path(path).read_bytes()


def test_another_workspace_cannot_read_set_delete_or_use_a_secret(api: TestClient) -> None:
    a = team(api, "team-a")
    b = team(api, "team-b")
    assert put(api, "team-a", "hf", VALUE, a["member"]).status_code == 201
    for role in ("viewer", "member", "admin"):
        headers = b[role]
        assert api.get(f"{WS}/team-a/secrets", headers=headers).status_code == 403
        assert put(api, "team-a", "hf", "stolen", headers).status_code == 403
        assert api.delete(f"{WS}/team-a/secrets/hf", headers=headers).status_code == 403
    # The same name in B's own workspace is B's (none): referring to it is a 422.
    r = api.post(
        f"{WS}/team-b/jobs", json=job("steal", secrets={"HF_TOKEN": "hf"}), headers=b["member"]
    )
    assert r.status_code == 422
    assert r.json()["error"]["fields"] == [
        {
            "path": "secrets.HF_TOKEN",
            "message": "secret 'hf' does not exist in workspace 'team-b' "
            "(create it with `corral secret set hf`)",
        }
    ]
    assert api.get(f"{WS}/team-b/jobs", headers=b["member"]).json()["jobs"] == []
    endpoint = {"name": "steal", "command": "serve", "secrets": {"HF_TOKEN": "hf"}}
    r = api.post(f"{WS}/team-b/endpoints", json=endpoint, headers=b["member"])
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "secrets.HF_TOKEN"
    # Nor through an endpoint update.
    plain = {"name": "ok", "command": "serve"}
    assert api.post(f"{WS}/team-b/endpoints", json=plain, headers=b["member"]).status_code == 201
    r = api.put(
        f"{WS}/team-b/endpoints/ok", json={**plain, "secrets": {"T": "hf"}}, headers=b["member"]
    )
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "secrets.T"
    # A's own listing is untouched.
    assert [
        s["name"] for s in api.get(f"{WS}/team-a/secrets", headers=ADMIN).json()["secrets"]
    ] == ["hf"]


def test_bad_names_and_values_are_422s(api: TestClient) -> None:
    r = put(api, "default", "Bad_Name", "v", ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "name"
    r = put(api, "default", "big", "x" * (64 * 1024 + 1), ADMIN)
    assert r.status_code == 422 and "64 KiB" in r.json()["error"]["message"]
    assert put(api, "default", "big", "x" * (64 * 1024), ADMIN).status_code == 201
    r = api.put(f"{WS}/default/secrets/v", json={"value": "x", "extra": 1}, headers=ADMIN)
    assert r.status_code == 422
    r = api.post(
        f"{WS}/default/jobs",
        json=job("both", env={"HF_TOKEN": "x"}, secrets={"HF_TOKEN": "big"}),
        headers=ADMIN,
    )
    assert r.status_code == 422 and "HF_TOKEN is in both" in r.json()["error"]["message"]


def test_a_secret_in_use_is_not_deleted_until_its_users_are_gone(api: TestClient) -> None:
    assert put(api, "default", "hf", VALUE, ADMIN).status_code == 201
    assert (
        api.post(
            f"{WS}/default/jobs", json=job("a", secrets={"T": "hf"}), headers=ADMIN
        ).status_code
        == 201
    )
    endpoint = {"name": "chat", "command": "serve", "min_replicas": 0, "secrets": {"T": "hf"}}
    assert api.post(f"{WS}/default/endpoints", json=endpoint, headers=ADMIN).status_code == 201
    r = api.delete(f"{WS}/default/secrets/hf", headers=ADMIN)
    assert r.status_code == 409
    assert "endpoint 'chat'" in r.json()["error"]["message"]
    assert "job 'a'" in r.json()["error"]["message"]
    assert api.post(f"{WS}/default/jobs/a/cancel", headers=ADMIN).json()["state"] == "cancelled"
    r = api.put(f"{WS}/default/endpoints/chat", json={**endpoint, "secrets": {}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert api.delete(f"{WS}/default/secrets/hf", headers=ADMIN).status_code == 204
    assert api.get(f"{WS}/default/secrets", headers=ADMIN).json()["secrets"] == []
    assert api.delete(f"{WS}/default/secrets/hf", headers=ADMIN).status_code == 404


def test_the_desired_set_carries_the_value_only_to_a_replica_that_starts(api: TestClient) -> None:
    cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
    box: SecretBox = api.app.state.secret_box  # type: ignore[attr-defined]
    node = register_node(cp.store, "node-1")
    assert put(api, "default", "hf", VALUE, ADMIN).status_code == 201
    spec = job("t", secrets={"HF_TOKEN": "hf"}, env={"PLAIN": "p"})
    assert api.post(f"{WS}/default/jobs", json=spec, headers=ADMIN).status_code == 201

    def placed() -> bool:
        with cp.store.read() as session:
            return session.scalar(select(Replica.id)) is not None

    wait_for("the scheduler to place the job", placed)
    with cp.store.read() as session:
        [assignment] = build_assignments(session, node, secrets=box)
        assert assignment.env["HF_TOKEN"] == VALUE and assignment.env["PLAIN"] == "p"
        # Without the key nothing is opened (and nothing else holds the value).
        [keyless] = build_assignments(session, node)
        assert "HF_TOKEN" not in keyless.env
        # Another key (a server not sharing the key file) opens nothing, and the node's
        # desired set is still built.
        [foreign] = build_assignments(session, node, secrets=SecretBox.generate())
        assert "HF_TOKEN" not in foreign.env and foreign.env["PLAIN"] == "p"
    with cp.store.transaction() as session:
        replica = session.scalars(select(Replica)).one()
        replica.state = "running"
    with cp.store.read() as session:
        [running] = build_assignments(session, node, secrets=box)
        assert running.started and running.env == {}
    # Deleted after submission (a delete racing the submission): started without it.
    with cp.store.transaction() as session:
        session.scalars(select(Replica)).one().state = "assigned"
        session.execute(text("DELETE FROM secrets"))
    with cp.store.read() as session:
        [bare] = build_assignments(session, node, secrets=box)
        assert "HF_TOKEN" not in bare.env and bare.env["PLAIN"] == "p"
        assert session.scalars(select(Job)).one().state in ("pending", "starting")


def test_spec_secrets_are_validated() -> None:
    ok = JobSpec(command="x", secrets={"HF_TOKEN": "hf-token", "_X1": "a"})
    assert ok.secrets == {"HF_TOKEN": "hf-token", "_X1": "a"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"secrets": {"1BAD": "a"}}, "not a valid environment variable name"),
        ({"secrets": {"OK": "Bad_Name"}}, "not a valid secret name (for OK)"),
        ({"secrets": {f"V{i}": "a" for i in range(65)}}, "65 secrets; at most 64"),
        ({"secrets": {"T": "a"}, "env": {"T": "x"}}, "T is in both `env` and `secrets`"),
    ]
    for fields, message in bad:
        with pytest.raises(ValidationError, match=re.escape(message)):
            JobSpec(command="x", **fields)
        with pytest.raises(ValidationError, match=re.escape(message)):
            EndpointSpec(command="x", **fields)
    with pytest.raises(ValidationError, match=r"PORT is set by corral"):
        EndpointSpec(command="x", secrets={"PORT": "a"})


# -- end to end: a real server and agent ------------------------------------------------


def test_a_replica_sees_the_value_in_its_environment(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_server()
        cluster.agent("node-1")
        cluster.wait_node_ready("node-1")
        client: Client
        with cluster.client() as client:
            client.set_secret("hf", VALUE)
            client.submit_job(JobSpec(**job("print", secrets={"HF_TOKEN": "hf"})))
            done = client.wait_job("print", timeout=60)
            assert done.state == "succeeded", done
            log = "".join(_log_pages(client, "print"))
            assert hashlib.sha256(VALUE.encode()).hexdigest() in log
            assert VALUE not in client.get_job("print").model_dump_json()
    finally:
        cluster.close()
    server_db = tmp_path / "home" / "corral.db"
    assert VALUE.encode() not in server_db.read_bytes()


def _log_pages(client: Any, name: str) -> Iterator[str]:
    deadline = time.monotonic() + 30
    offset = 0
    while time.monotonic() < deadline:
        page = client.job_logs(name, offset=offset)
        yield page.data
        offset = page.next_offset
        if page.complete:
            return


# -- the CLI against the app in-process ---------------------------------------------------


class AppTransport(httpx.BaseTransport):
    """The SDK's requests, handed to the app in-process through its TestClient."""

    def __init__(self, server: TestClient) -> None:
        self.server = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.server.request(
            request.method,
            str(request.url.copy_with(scheme="http", host="testserver", port=None)),
            headers=dict(request.headers),
            content=request.read(),
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    database_url = f"sqlite:///{tmp_path / 'corral.db'}"
    home = tmp_path / "home"
    home.mkdir()
    runner = CliRunner(
        env={"CORRAL_SERVER": None, "CORRAL_WORKSPACE": None, "NO_COLOR": "1", "COLUMNS": "200"}
    )
    with in_process(database_url, tmp_path / "server") as server:

        def client(settings: Settings) -> Client:
            return Client(
                "http://testserver",
                settings.token,
                settings.workspace,
                transport=AppTransport(server),
            )

        def run(*args: str, input: str | None = None) -> Any:
            app = build_app(CliDeps(client_factory=client, home=home))
            return runner.invoke(app, list(args), input=input, env={"CORRAL_TOKEN": "crl_admin"})

        yield run


def test_cli_set_ls_rm_round_trip(cli: Callable[..., Any], tmp_path: Path) -> None:
    r = cli("secret", "set", "hf", input=VALUE + "\n")
    assert r.exit_code == 0, r.output
    assert "created secret hf" in r.output and VALUE not in r.output
    value_file = tmp_path / "value.txt"
    value_file.write_text("from-a-file\n")
    r = cli("secret", "set", "hf", "--from-file", str(value_file))
    assert r.exit_code == 0 and "replaced secret hf" in r.output
    r = cli("secret", "ls")
    assert r.exit_code == 0 and "NAME" in r.output and "hf" in r.output
    assert VALUE not in r.output and "from-a-file" not in r.output
    listed = json.loads(cli("secret", "ls", "--json").stdout)
    assert [s["name"] for s in listed["secrets"]] == ["hf"]
    assert set(listed["secrets"][0]) == {"name", "created_at", "updated_at"}
    assert cli("secret", "rm", "hf").exit_code == 0
    assert json.loads(cli("secret", "ls", "--json").stdout) == {"secrets": []}


def test_cli_errors_are_one_line_with_an_exit_code(cli: Callable[..., Any], tmp_path: Path) -> None:
    r = cli("secret", "set", "hf", input="")
    assert r.exit_code == 2 and "error: stdin: the value is empty" in r.output
    r = cli("secret", "set", "hf", "--from-file", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "error: --from-file" in r.output
    r = cli("secret", "set", "Bad_Name", input="v")
    assert r.exit_code == 2 and "not a valid secret name" in r.output
    r = cli("secret", "rm", "nope")
    assert r.exit_code == 1 and "error: secret 'nope' in workspace 'default' not found" in r.output
    # A value is never taken from the command line.
    r = cli("secret", "set", "hf", VALUE)
    assert r.exit_code == 2 and "Traceback" not in r.output
