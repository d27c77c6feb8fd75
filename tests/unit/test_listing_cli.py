"""`corral job ls` and `corral status` against the real app in-process (SQLite): newest
first, filters, the footer when more exist, --json with next_cursor, --watch without a
terminal, and one-line errors for bad flags."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from corral.cli.joblist import JobQuery, watch_jobs
from corral.client import Client
from support.app import AppTransport
from support.cli import Cli

ADMIN = {"Authorization": "Bearer crl_admin"}
UNPLACEABLE = {"resources": {"gpus": "H100:64"}}


def submit(server: TestClient, name: str, workspace: str = "default") -> None:
    body = {"name": name, "command": "true", **UNPLACEABLE}
    r = server.post(f"/v1/workspaces/{workspace}/jobs", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


def names(stdout: str, column: int = 0) -> list[str]:
    """The given column of a table's rows (after its header and rule)."""
    return [line.split()[column] for line in stdout.splitlines()[2:] if line.strip()]


def test_job_ls_is_newest_first_with_a_footer_when_more_exist(cli: Cli, server: TestClient) -> None:
    for i in range(5):
        submit(server, f"j{i}")
    result = cli("job", "ls")
    assert result.exit_code == 0, result.output
    assert names(result.stdout) == ["j4", "j3", "j2", "j1", "j0"]
    assert "more exist" not in result.output
    limited = cli("job", "ls", "--limit", "2")
    assert names(limited.stdout)[:2] == ["j4", "j3"]
    assert "showing the 2 newest; more exist: --limit N (up to 1000) or --all" in limited.stdout
    every = cli("job", "ls", "--limit", "2", "--all")
    assert names(every.stdout) == ["j4", "j3", "j2", "j1", "j0"]
    assert "more exist" not in every.output


def test_job_ls_filters_and_json(cli: Cli, server: TestClient) -> None:
    for name in ("a", "b", "c"):
        submit(server, name)
    assert cli("job", "cancel", "b").exit_code == 0
    pending = cli("job", "ls", "--state", "pending")
    assert names(pending.stdout) == ["c", "a"]
    both = cli("job", "ls", "-s", "pending", "-s", "cancelled", "--kind", "job")
    assert names(both.stdout) == ["c", "b", "a"]
    none = cli("job", "ls", "--state", "running")
    assert none.exit_code == 0 and "no jobs in workspace default match these filters" in none.output
    as_json = json.loads(cli("job", "ls", "--json", "--limit", "1").stdout)
    assert [j["name"] for j in as_json["jobs"]] == ["c"] and as_json["next_cursor"]


def test_job_ls_across_workspaces_adds_a_workspace_column(cli: Cli, server: TestClient) -> None:
    assert cli("workspace", "create", "team-a").exit_code == 0
    submit(server, "mine")
    submit(server, "theirs", "team-a")
    result = cli("job", "ls", "-A")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[:2] == ["WORKSPACE", "NAME"]
    rows = [line.split()[:2] for line in result.stdout.splitlines()[2:] if line.strip()]
    assert rows == [["team-a", "theirs"], ["default", "mine"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "sleeping"], "--state: expected one of pending, starting"),
        (["--kind", "pod"], "--kind: expected job, endpoint-replica or all"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_job_ls_bad_flags_are_one_error_line(cli: Cli, args: list[str], message: str) -> None:
    result = cli("job", "ls", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_watch_without_a_terminal_reprints_when_the_list_changes(
    server: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client = Client("http://testserver", "crl_admin", "default", transport=AppTransport(server))

    def settled(name: str) -> None:
        # Cancelled, a job changes no more: the scheduler's reasons would be changes too.
        submit(server, name)
        client.cancel_job(name)

    settled("first")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:  # nothing changed since the first poll: no reprint
            settled("second")
        if len(polls) == 4:
            raise KeyboardInterrupt

    watch_jobs(client, JobQuery(), poll_s=0.5, sleep=sleep)
    printed = capsys.readouterr().out
    assert printed.count("NAME") == 2  # drawn at first, and once more after the change
    assert printed.rindex("second") > printed.rindex("NAME")
    assert polls == [0.5] * 4


def test_status_shows_the_fleet_and_the_work(cli: Cli, server: TestClient) -> None:
    submit(server, "waits")
    result = cli("status")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "nodes none registered" in text
    assert "jobs 0 running, 1 pending (every workspace)" in text
    assert "why jobs wait" in text and "workspaces" in text
    as_json = json.loads(cli("status", "--json").stdout)
    assert as_json["work"]["pending"] == 1 and as_json["scope"] == "*"
