"""A job file that names its job runs again: the next free name once the first has ended."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import Result

from support.cli import ADMIN, JOBS, Cli


def run(cli: Cli, *args: str) -> Result:
    return cli("job", "run", "--detach", *args)


def test_a_job_file_runs_again_under_the_next_free_name(
    server: TestClient, cli: Cli, tmp_path: Path
) -> None:
    spec = tmp_path / "ddp.yaml"
    spec.write_text("name: ddp\ncommand: 'true'\n")
    first = run(cli, str(spec))
    assert first.exit_code == 0, first.output
    # Still at work: the same file again is a conflict, not a silent second copy.
    busy = run(cli, str(spec))
    assert busy.exit_code == 1 and "already exists" in busy.stderr
    assert server.post(f"{JOBS}/ddp/cancel", headers=ADMIN).status_code in (200, 202)
    again = run(cli, str(spec))
    assert again.exit_code == 0, again.output
    assert "job 'ddp' has already run (cancelled); this run is 'ddp-2'" in again.stderr
    assert "ddp-2" in again.stdout
    third = run(cli, str(spec))
    assert "ddp-2" not in third.stdout and "ddp-3" in third.stdout + third.stderr
    # A name chosen with --name is never changed behind the user's back.
    named = run(cli, "--name", "ddp", "--", "true")
    assert named.exit_code == 1 and "already exists" in named.stderr
