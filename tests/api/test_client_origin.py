"""The CLI against the real app in-process: a workspace token implies its workspace, and a
rejected token names the server that was asked and why that one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, NotCorralApi, NotFound, Settings
from corral.client.config import Origin
from support.app import ADMIN_TOKEN, AppTransport, in_process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    with in_process(f"sqlite:///{tmp_path / 'corral.db'}", tmp_path / "server") as client:
        yield client


def cli(server: TestClient, home: Path, *args: str, env: dict[str, str | None]) -> Result:
    def client(settings: Settings) -> Client:
        # The real resolved settings (origin included), only the network is in-process.
        return Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=AppTransport(server),
            origin=settings.origin,
        )

    app = build_app(CliDeps(client_factory=client, home=home))
    base: dict[str, str | None] = {
        "CORRAL_SERVER": None,
        "CORRAL_TOKEN": None,
        "CORRAL_WORKSPACE": None,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env={**base, **env})


def test_a_workspace_token_acts_in_its_workspace_without_flags(
    server: TestClient, tmp_path: Path
) -> None:
    admin = {"CORRAL_TOKEN": ADMIN_TOKEN}
    assert cli(server, tmp_path, "workspace", "create", "team-a", env=admin).exit_code == 0
    made = cli(server, tmp_path, "token", "create", "--role", "member", "-w", "team-a", env=admin)
    team_a = {"CORRAL_TOKEN": made.stdout.strip()}
    submitted = cli(
        server, tmp_path, "job", "run", "--detach", "--name", "a1", "--", "true", env=team_a
    )
    assert submitted.exit_code == 0, submitted.output
    listed = cli(server, tmp_path, "job", "ls", "--json", env=team_a)
    assert listed.exit_code == 0, listed.output
    assert '"a1"' in listed.stdout and '"team-a"' in listed.stdout
    # The admin's token is the cluster's: it still means `default` when nothing is named.
    assert '"a1"' not in cli(server, tmp_path, "job", "ls", "--json", env=admin).stdout
    # A workspace named explicitly still wins (and is refused for another team's token).
    other = cli(server, tmp_path, "job", "ls", "-w", "default", env=team_a)
    assert other.exit_code == 1 and "default" in other.stderr


def test_a_rejected_token_names_the_server_and_where_each_came_from(
    server: TestClient, tmp_path: Path
) -> None:
    wrong = cli(server, tmp_path, "job", "ls", env={"CORRAL_TOKEN": "crl_nope"})
    assert wrong.exit_code == 1
    line = wrong.stderr.splitlines()[0]
    assert "http://127.0.0.1:7390 (the default: no --server, CORRAL_SERVER" in line
    assert "rejected the token from CORRAL_TOKEN" in line
    missing = cli(server, tmp_path, "job", "ls", env={"CORRAL_SERVER": "http://corral.example"})
    assert missing.exit_code == 1
    assert (
        "http://corral.example (from CORRAL_SERVER) needs a token, and none was found in "
        f"CORRAL_TOKEN or {tmp_path / 'config.json'}" in missing.stderr.replace("\n", " ")
    )
    assert "Traceback" not in wrong.output + missing.output


def test_a_server_that_is_not_corral_is_named_as_such(tmp_path: Path) -> None:
    """`--server` at the gateway, or at any other web server, says so, not "Not Found"."""

    def answer(response: httpx.Response) -> Client:
        return Client(
            "http://127.0.0.1:8080",
            "t",
            "default",
            transport=httpx.MockTransport(lambda request: response),
            origin=Origin(server="--server"),
        )

    other = answer(httpx.Response(404, text="<html>Not Found</html>"))
    with pytest.raises(NotCorralApi) as info:
        other.list_jobs()
    text = str(info.value)
    assert text.startswith("http://127.0.0.1:8080 (from --server) is not a corral API server")
    assert "GET /v1/workspaces/default/jobs with HTTP 404 Not Found" in text
    gateway = answer(
        httpx.Response(
            404,
            json={"error": {"code": "not_found", "message": "no such endpoint"}},
            headers={"corral-gateway": "1"},
        )
    )
    with pytest.raises(NotCorralApi, match="it is corral's gateway"):
        gateway.list_jobs()


def test_the_api_marks_every_answer_as_corral(server: TestClient) -> None:
    for response in (
        server.get("/healthz"),
        server.get("/v1/no-such-route"),
        server.get("/v1/whoami"),  # 401
    ):
        assert response.headers["corral-api"] == "1"
    missing = Client("http://testserver", ADMIN_TOKEN, "default", transport=AppTransport(server))
    with pytest.raises(NotFound):  # corral's own 404 stays a NotFound
        missing.get_job("nope")


def test_a_member_token_is_made_for_the_workspace_the_cli_acts_in(
    server: TestClient, tmp_path: Path
) -> None:
    """The README's `TOKEN=$(corral token create --name curl)` as the cluster admin."""
    admin = {"CORRAL_TOKEN": ADMIN_TOKEN}
    made = cli(server, tmp_path, "token", "create", "--name", "curl", env=admin)
    assert made.exit_code == 0, made.output
    assert "created member token curl for workspace default" in made.stderr
    listed = cli(server, tmp_path, "job", "ls", env={"CORRAL_TOKEN": made.stdout.strip()})
    assert listed.exit_code == 0, listed.output
