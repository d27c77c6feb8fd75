"""The CLI against the real app in-process: a workspace token implies its workspace, and a
rejected token names the server that was asked and why that one."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.client import Client, NotCorralApi, NotFound
from corral.client.config import Origin
from support.app import ADMIN_TOKEN, AppTransport
from support.cli import Cli


def test_a_workspace_token_acts_in_its_workspace_without_flags(
    cli: Cli,
) -> None:
    assert cli("workspace", "create", "team-a").exit_code == 0
    made = cli("token", "create", "--role", "member", "-w", "team-a")
    team_a = made.stdout.strip()
    submitted = cli("job", "run", "--detach", "--name", "a1", "--", "true", token=team_a)
    assert submitted.exit_code == 0, submitted.output
    listed = cli("job", "ls", "--json", token=team_a)
    assert listed.exit_code == 0, listed.output
    assert '"a1"' in listed.stdout and '"team-a"' in listed.stdout
    # The admin's token is the cluster's: it still means `default` when nothing is named.
    assert '"a1"' not in cli("job", "ls", "--json", token=ADMIN_TOKEN).stdout
    # A workspace named explicitly still wins (and is refused for another team's token).
    other = cli("job", "ls", "-w", "default", token=team_a)
    assert other.exit_code == 1 and "default" in other.stderr


def test_a_rejected_token_names_the_server_and_where_each_came_from(
    cli: Cli,
) -> None:
    wrong = cli("job", "ls", token="crl_nope")
    assert wrong.exit_code == 1
    line = wrong.stderr.splitlines()[0]
    assert "http://127.0.0.1:7390 (the default: no --server, CORRAL_SERVER" in line
    assert "rejected the token from CORRAL_TOKEN" in line
    missing = cli("job", "ls", token=None, env={"CORRAL_SERVER": "http://corral.example"})
    assert missing.exit_code == 1
    assert (
        "http://corral.example (from CORRAL_SERVER) needs a token, and none was found in "
        f"CORRAL_TOKEN or {cli.home / 'config.json'}" in missing.stderr.replace("\n", " ")
    )
    assert "Traceback" not in wrong.output + missing.output


def test_a_server_that_is_not_corral_is_named_as_such() -> None:
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
    cli: Cli,
) -> None:
    """The README's `TOKEN=$(corral token create --name curl)` as the cluster admin."""
    made = cli("token", "create", "--name", "curl", token=ADMIN_TOKEN)
    assert made.exit_code == 0, made.output
    assert "created member token curl for workspace default" in made.stderr
    listed = cli("job", "ls", token=made.stdout.strip())
    assert listed.exit_code == 0, listed.output
