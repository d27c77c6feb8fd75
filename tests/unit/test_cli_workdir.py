"""`corral job run` and `corral pod create` send the working directory (cli/workdir.py),
against the real control plane in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.client.workdir import pack_workdir
from support.cli import Cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory, and the current directory."""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "requirements.txt").write_text("numpy\n")
    (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "train.py").write_text("import pkg\n")
    monkeypatch.chdir(root)
    return root


def run(cli: Cli, name: str, *args: str) -> tuple[int, str, str | None]:
    result = cli("job", "run", "--detach", "--name", name, *args)
    workdir = cli.sdk().get_job(name).spec.workdir if result.exit_code == 0 else None
    return result.exit_code, result.stderr, workdir


def test_a_project_directory_is_sent_by_default_and_says_so(cli: Cli, project: Path) -> None:
    code, stderr, workdir = run(cli, "train", "--", "python", "train.py")
    assert code == 0, stderr
    digest = pack_workdir(project).digest
    assert workdir == f"sha256:{digest}"
    line = stderr.splitlines()[0]
    assert line.startswith(f"workdir: {project} → sha256:{digest[:8]} (3 files, ")
    assert "(default: this directory is a project; --no-workdir to not send it)" in line
    # The server has the tree: a job naming it can be placed.
    answer = cli.server.get(
        f"/v1/workspaces/default/artifacts/manifests/{digest}",
        headers={"Authorization": "Bearer crl_admin"},
    )
    assert answer.status_code == 200 and answer.json()["files"] == 3

    # The same tree again uploads nothing.
    code, stderr, workdir = run(cli, "again", "--", "python", "train.py")
    assert code == 0 and workdir == f"sha256:{digest}"
    assert "uploaded 0 B)" in stderr


def test_no_workdir_sends_nothing(cli: Cli, project: Path) -> None:
    code, stderr, workdir = run(cli, "bare", "--no-workdir", "--", "true")
    assert code == 0, stderr
    assert workdir is None
    assert "workdir:" not in stderr
    both = cli("job", "run", "-d", "--workdir", ".", "--no-workdir", "--", "true")
    assert both.exit_code == 2
    assert both.stderr.strip() == "error: --workdir and --no-workdir: give one of them"
    # It wins over the file's own `workdir:` too.
    spec = project / "job.yaml"
    spec.write_text("name: filed\ncommand: 'true'\nworkdir: .\n")
    result = cli("job", "run", "-d", "--no-workdir", str(spec))
    assert result.exit_code == 0, result.output
    assert cli.sdk().get_job("filed").spec.workdir is None


def test_a_directory_that_is_no_project_is_not_sent(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    monkeypatch.chdir(plain)
    code, stderr, workdir = run(cli, "plain", "--", "true")
    assert code == 0 and workdir is None and "workdir:" not in stderr
    # Asked for, it is sent, and no "default" is claimed.
    code, stderr, workdir = run(cli, "asked", "--workdir", ".", "--", "true")
    assert code == 0 and workdir == f"sha256:{pack_workdir(plain).digest}"
    assert "default" not in stderr


def test_a_workdir_that_is_not_a_directory_is_one_clear_line(cli: Cli, project: Path) -> None:
    result = cli("job", "run", "-d", "--workdir", "train.py", "--", "true")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --workdir: {project / 'train.py'} is not a directory; expected a directory to send"
    )
    result = cli("job", "run", "-d", "--workdir", "nowhere", "--", "true")
    assert result.exit_code == 2
    assert "nowhere does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_a_spec_files_workdir_is_relative_to_the_file(
    cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = project / "jobs" / "train.yaml"
    spec.parent.mkdir()
    spec.write_text("name: from-file\ncommand: python train.py\nworkdir: ..\n")
    monkeypatch.chdir(tmp_path)  # not the project: the file says where the code is
    result = cli("job", "run", "-d", str(spec))
    assert result.exit_code == 0, result.output
    assert cli.sdk().get_job("from-file").spec.workdir == f"sha256:{pack_workdir(project).digest}"
    assert "default" not in result.stderr


def test_a_working_dir_on_the_node_turns_the_default_off(cli: Cli, project: Path) -> None:
    spec = project / "job.yaml"
    spec.write_text("name: on-node\ncommand: 'true'\nworking_dir: /srv/code\n")
    result = cli("job", "run", "-d", str(spec))
    assert result.exit_code == 0, result.output
    assert cli.sdk().get_job("on-node").spec.workdir is None


def test_an_environment_file_that_does_not_travel_is_named(cli: Cli, project: Path) -> None:
    (project / ".gitignore").write_text("requirements.txt\n")
    result = cli("job", "run", "-d", "--requirements", "requirements.txt", "--", "true")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: environment.requirements: requirements.txt is not among the files sent "
        f"from {project}"
    )


def test_code_flags_become_the_spec(cli: Cli, project: Path) -> None:
    code, stderr, _ = run(
        cli,
        "flags",
        "--python",
        "3.11",
        "--requirements",
        "requirements.txt",
        "--setup",
        "echo ready",
        "--",
        "true",
    )
    assert code == 0, stderr
    spec = cli.sdk().get_job("flags").spec
    assert spec.environment is not None
    assert (spec.environment.python, spec.environment.requirements) == ("3.11", "requirements.txt")
    assert spec.setup == "echo ready"
    code, stderr, _ = run(cli, "boxed", "--image", "debian:12", "--", "true")
    assert code == 0, stderr
    assert cli.sdk().get_job("boxed").spec.image == "debian:12"
    # The image is the environment: the flags that build one beside it are refused.
    both = cli("job", "run", "-d", "--image", "debian:12", "--setup", "echo", "--", "true")
    assert both.exit_code == 2 and "`setup` with `image`" in both.stderr
    bad = cli("job", "run", "-d", "--python", "two", "--", "true")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --python: ")


def test_pod_create_sends_the_project_too(cli: Cli, project: Path) -> None:
    result = cli("pod", "create", "dev", "--no-wait")
    assert result.exit_code == 0, result.output
    assert "(default: this directory is a project" in result.stderr
    pod = cli.sdk().get_pod("dev")
    assert pod.spec.workdir == f"sha256:{pack_workdir(project).digest}"
    result = cli("pod", "create", "plain", "--no-wait", "--no-workdir")
    assert result.exit_code == 0, result.output
    assert cli.sdk().get_pod("plain").spec.workdir is None
