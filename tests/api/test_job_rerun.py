"""A job file that names its job runs again: the next free name once the first has ended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, Settings
from support.app import ADMIN_TOKEN, AppTransport, in_process

JOBS = "/v1/workspaces/default/jobs"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    with in_process(f"sqlite:///{tmp_path / 'corral.db'}", tmp_path / "server") as client:
        yield client


def run(server: TestClient, home: Path, *args: str) -> Result:
    def client(settings: Settings) -> Client:
        return Client(
            "http://testserver", settings.token, "default", transport=AppTransport(server)
        )

    app = build_app(CliDeps(client_factory=client, home=home))
    env = {"CORRAL_TOKEN": "crl_admin", "CORRAL_SERVER": None, "NO_COLOR": "1"}
    return CliRunner().invoke(app, ["job", "run", "--detach", *args], env=env)


def test_a_job_file_runs_again_under_the_next_free_name(server: TestClient, tmp_path: Path) -> None:
    spec = tmp_path / "ddp.yaml"
    spec.write_text("name: ddp\ncommand: 'true'\n")
    first = run(server, tmp_path, str(spec))
    assert first.exit_code == 0, first.output
    # Still at work: the same file again is a conflict, not a silent second copy.
    busy = run(server, tmp_path, str(spec))
    assert busy.exit_code == 1 and "already exists" in busy.stderr
    assert server.post(f"{JOBS}/ddp/cancel", headers=ADMIN).status_code in (200, 202)
    again = run(server, tmp_path, str(spec))
    assert again.exit_code == 0, again.output
    assert "job 'ddp' has already run (cancelled); this run is 'ddp-2'" in again.stderr
    assert "ddp-2" in again.stdout
    third = run(server, tmp_path, str(spec))
    assert "ddp-2" not in third.stdout and "ddp-3" in third.stdout + third.stderr
    # A name chosen with --name is never changed behind the user's back.
    named = run(server, tmp_path, "--name", "ddp", "--", "true")
    assert named.exit_code == 1 and "already exists" in named.stderr
