"""The environment wrapper (corral.agent.envbuild) as the shim runs it: a subprocess with
HOME in a temporary directory, packages from a local `file://` index of tiny wheels, and uv
behind a small script (CORRAL_UV) that records every call, so that "did not run uv" and
"built once" are facts read from its log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uv

from corral.agent import envbuild
from support.wheels import Package, index_url, write_index

PACKAGES = [
    Package("alpha", "1.0", requires=("beta>=1",)),
    Package("beta", "1.2"),
    Package("gamma", "2.0"),
]
IMPORT_ALL = "import alpha, beta, sys; print('WORKLOAD', alpha.VERSION, beta.VERSION, sys.prefix)"


@dataclass
class Node:
    """One workspace's home on a node, a replica's working and status directories."""

    root: Path
    home: Path
    work: Path
    status: Path
    uv_log: Path
    env: dict[str, str]

    def run(
        self,
        assignment: Mapping[str, Any],
        argv: Sequence[str],
        index: str | None = None,
        **popen: Any,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(assignment, argv, index),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            **popen,
        )

    def argv(
        self, assignment: Mapping[str, Any], argv: Sequence[str], index: str | None
    ) -> list[str]:
        return envbuild.wrap_argv(dict(assignment), list(argv), index)

    def uv_calls(self) -> list[str]:
        if not self.uv_log.exists():
            return []
        return self.uv_log.read_text().splitlines()

    def envs(self) -> list[Path]:
        envs = self.home / ".cache" / "corral" / "envs"
        return sorted(p for p in envs.iterdir() if p.is_dir()) if envs.exists() else []

    def error(self) -> str:
        return (self.status / "error.txt").read_text()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("index")
    write_index(root, PACKAGES)
    return index_url(root)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    home, work, status = tmp_path / "home", tmp_path / "work", tmp_path / "work-status"
    for path in (home, work, status):
        path.mkdir()
    uv_log = tmp_path / "uv-calls.log"
    # Records each call; with HOLD present, a `uv venv` announces itself (BUILDING) and
    # waits for RELEASE, which lets a test start a second replica while the first builds.
    wrapper = tmp_path / "uv"
    wrapper.write_text(
        f"""#!/bin/sh
echo "$*" >> {uv_log}
if [ "$1" = venv ] && [ -e {tmp_path}/HOLD ]; then
  touch {tmp_path}/BUILDING
  i=0
  while [ ! -e {tmp_path}/RELEASE ]; do
    sleep 0.02; i=$((i+1)); [ $i -gt 3000 ] && exit 9
  done
fi
exec {uv.find_uv_bin()} "$@"
"""
    )
    wrapper.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "CORRAL_", "XDG_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        HOME=str(home),
        CORRAL_UV=str(wrapper),
        CORRAL_PROGRESS_FILE=str(status / "progress.json"),
        UV_PYTHON_DOWNLOADS="never",  # nothing leaves this machine
    )
    return Node(tmp_path, home, work, status, uv_log, env)


def _wait_for(check: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_nothing_to_do_leaves_the_argv_alone() -> None:
    argv = ["python", "train.py"]
    assert envbuild.wrap_argv({}, argv, None) == argv
    assert envbuild.wrap_argv({"environment": None, "setup": None}, argv, "http://x") == argv
    assert envbuild.wrap_argv({"environment": {}}, argv, None) == argv
    wrapped = envbuild.wrap_argv({"setup": "true"}, argv, "http://w/simple/")
    assert wrapped[:4] == [sys.executable, "-I", "-m", "corral.agent.envbuild"]
    assert wrapped[5:] == ["--", *argv]  # a short plan is one argument
    assert json.loads(wrapped[4]) == {
        "environment": None,
        "setup": "true",
        "index_url": "http://w/simple/",
        "status_dir": None,
    }


def test_cold_build_then_warm_start_from_cache_without_uv(node: Node, index: str) -> None:
    (node.work / "requirements.txt").write_text("alpha\n")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assignment = {"environment": {"python": version, "requirements": "requirements.txt"}}

    cold = node.run(assignment, ["python", "-c", IMPORT_ALL], index)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    (env_dir,) = node.envs()
    key12 = env_dir.name[:12]
    assert f"corral: building environment {key12} (python {version}, requirements.txt)…" in (
        cold.stdout
    )
    assert f"corral: environment {key12} ready in " in cold.stdout
    assert "+ alpha==1.0" in cold.stdout  # uv's own output is in the log
    # The workload ran in the environment: the packages import, sys.prefix is the env.
    assert f"WORKLOAD 1.0 1.2 {env_dir}" in cold.stdout
    assert (env_dir / ".corral-ready").is_file()
    for made in (node.home / ".cache" / "corral", env_dir.parent):
        assert made.stat().st_mode & 0o777 == 0o700  # the workspace's own
    calls = node.uv_calls()
    assert [c.split()[0] for c in calls] == ["venv", "pip"]
    assert f"--index-url {index}" in calls[1]

    warm = node.run(assignment, ["python", "-c", IMPORT_ALL], index)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert f"corral: environment {key12} from cache" in warm.stdout
    assert "building" not in warm.stdout
    assert f"WORKLOAD 1.0 1.2 {env_dir}" in warm.stdout
    assert node.uv_calls() == calls  # uv was not started at all

    # A changed requirements file is another environment.
    (node.work / "requirements.txt").write_text("alpha\ngamma\n")
    changed = node.run(assignment, ["python", "-c", "import gamma; print(gamma.VERSION)"], index)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert changed.stdout.strip().endswith("2.0")
    assert len(node.envs()) == 2


def test_files_a_requirements_file_includes_are_part_of_the_key(node: Node, index: str) -> None:
    reqs = node.work / "reqs"
    reqs.mkdir()
    (reqs / "main.txt").write_text("-r base.txt\n--constraint=pins.txt\n")
    (reqs / "base.txt").write_text("alpha\n")
    (reqs / "pins.txt").write_text("beta==1.2\n")
    assignment = {"environment": {"requirements": "reqs/main.txt"}}
    show = ["python", "-c", "import beta; print('BETA', beta.VERSION)"]
    first = node.run(assignment, show, index)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "BETA 1.2" in first.stdout
    # main.txt is unchanged; the constraints file it names changed: another environment.
    (reqs / "pins.txt").write_text("beta==1.2\ngamma==2.0\n")
    second = node.run(assignment, show, index)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "building environment" in second.stdout
    assert len(node.envs()) == 2


def test_inline_requirements_and_the_nodes_python(node: Node, index: str) -> None:
    assignment = {"environment": {"requirements": ["gamma==2.0", "alpha"]}}
    done = node.run(
        assignment, ["python", "-c", "import gamma, alpha; print(gamma.VERSION)"], index
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("2.0")
    py = ".".join(map(str, sys.version_info[:3]))
    assert f"(python {py}, 2 requirements)…" in done.stdout
    (env_dir,) = node.envs()
    assert (env_dir / ".corral-requirements.txt").read_text() == "gamma==2.0\nalpha\n"
    # The environment's interpreter is the one that runs corral (its base), not another.
    version = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == sys.version


def test_two_replicas_at_once_build_once(node: Node, index: str) -> None:
    (node.root / "HOLD").touch()
    assignment = {"environment": {"requirements": ["alpha"]}}
    argv = node.argv(assignment, ["python", "-c", IMPORT_ALL], index)
    logs = [node.root / "first.log", node.root / "second.log"]
    with logs[0].open("w") as first_log, logs[1].open("w") as second_log:
        first = subprocess.Popen(
            argv, cwd=node.work, env=node.env, stdout=first_log, stderr=subprocess.STDOUT
        )
        _wait_for((node.root / "BUILDING").exists, "the first replica to start building")
        second = subprocess.Popen(
            argv, cwd=node.work, env=node.env, stdout=second_log, stderr=subprocess.STDOUT
        )
        _wait_for(lambda: "waiting for environment" in logs[1].read_text(), "the second to wait")
        (node.root / "RELEASE").touch()
        assert first.wait(timeout=120) == 0, logs[0].read_text()
        assert second.wait(timeout=120) == 0, logs[1].read_text()
    first_out, second_out = (log.read_text() for log in logs)
    assert "building environment" in first_out
    assert "building environment" not in second_out
    assert second_out.index("waiting for environment") < second_out.index("from cache")
    assert "WORKLOAD 1.0 1.2" in first_out and "WORKLOAD 1.0 1.2" in second_out
    assert [c.split()[0] for c in node.uv_calls()] == ["venv", "pip"]


def test_a_requirement_that_does_not_exist_is_the_users_error(node: Node, index: str) -> None:
    assignment = {"environment": {"requirements": ["alpha", "nosuchpkg>=1"]}}
    failed = node.run(assignment, ["python", "-c", "print('WORKLOAD')"], index)
    assert failed.returncode == 2
    assert "WORKLOAD" not in failed.stdout
    error = node.error()
    assert error.startswith("the environment could not be built: No solution found")
    assert "nosuchpkg was not found in the package registry" in error
    assert "Using Python" not in error  # uv's chatter before its error is left out
    assert len(error.encode()) <= envbuild.MAX_ERROR_BYTES
    assert node.envs() == []  # a failed build leaves nothing half-made behind
    # The failure is not cached: a fixed spec builds.
    (node.status / "error.txt").unlink()
    fixed = node.run({"environment": {"requirements": ["alpha"]}}, ["true"], index)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_a_missing_requirements_file_names_the_field(node: Node, index: str) -> None:
    failed = node.run({"environment": {"requirements": "reqs/dev.txt"}}, ["true"], index)
    assert failed.returncode == 2
    assert node.error() == (
        "the environment could not be built: environment.requirements: no file "
        "'reqs/dev.txt' in the working directory"
    )
    assert node.uv_calls() == []


def test_setup_runs_once_per_node_and_environment(node: Node, index: str) -> None:
    setup = (
        "echo SETUP-OUTPUT\n"
        "python -c \"import alpha, sys; print('SETUP-PYTHON', sys.prefix)\"\n"
        'echo ran >> "$HOME/setup-count"\n'
    )
    assignment = {"environment": {"requirements": ["alpha"]}, "setup": setup}
    first = node.run(assignment, ["echo", "WORKLOAD"], index)
    assert first.returncode == 0, first.stdout + first.stderr
    (env_dir,) = node.envs()
    lines = first.stdout.splitlines()
    assert "SETUP-OUTPUT" in lines
    assert f"SETUP-PYTHON {env_dir}" in lines  # the environment's bin is first on PATH
    assert lines.index("SETUP-OUTPUT") < lines.index("WORKLOAD")

    again = node.run(assignment, ["echo", "WORKLOAD"], index)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "SETUP-OUTPUT" not in again.stdout
    assert "already done on this node" in again.stdout
    assert (node.home / "setup-count").read_text() == "ran\n"

    # Another environment (or no environment) is another setup.
    other = node.run({"environment": {"requirements": ["gamma"]}, "setup": setup}, ["true"], index)
    assert other.returncode != 0  # alpha is not in that environment: `bash -e` stops
    assert "setup failed with exit code 1" in node.error()
    bare = node.run({"setup": 'echo ran >> "$HOME/setup-count"'}, ["echo", "WORKLOAD"])
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert "WORKLOAD" in bare.stdout
    assert (node.home / "setup-count").read_text() == "ran\nran\n"


def test_a_failing_setup_is_the_users_error_and_is_not_marked_done(node: Node, index: str) -> None:
    assignment = {"setup": "echo preparing\necho 'cannot find dataset' >&2\nexit 3\necho never"}
    failed = node.run(assignment, ["echo", "WORKLOAD"], index)
    assert failed.returncode == 2
    assert "WORKLOAD" not in failed.stdout and "never" not in failed.stdout
    assert "cannot find dataset" in failed.stdout  # in the log
    assert node.error() == "setup failed with exit code 3: preparing\ncannot find dataset"
    again = node.run(assignment, ["echo", "WORKLOAD"], index)
    assert again.returncode == 2 and "preparing" in again.stdout  # not cached as done


def _locked_project(node: Node, index: str) -> Path:
    project = node.work / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["alpha"]\n'
    )
    subprocess.run(
        [uv.find_uv_bin(), "lock", "--index-url", index],
        cwd=project,
        env=node.env,
        check=True,
        capture_output=True,
    )
    return project


def test_uv_lock_installs_exactly_the_lock(node: Node, index: str) -> None:
    _locked_project(node, index)
    assignment = {"environment": {"uv_lock": "proj/uv.lock"}}
    done = node.run(assignment, ["python", "-c", IMPORT_ALL])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "proj/uv.lock)…" in done.stdout
    assert "WORKLOAD 1.0 1.2" in done.stdout
    assert [c.split()[0] for c in node.uv_calls()] == ["venv", "sync"]
    (env_dir,) = node.envs()
    installed = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import proj"], capture_output=True, text=True
    )
    assert installed.returncode != 0  # the project itself is the working directory's code


def test_uv_lock_from_the_wheelhouse(node: Node, index: str, tmp_path: Path) -> None:
    """With an index given (the control plane's wheelhouse), the lock's pins and hashes are
    installed from it, not from the URLs in the lock, which the node cannot reach."""
    own = tmp_path / "own-index"
    write_index(own, PACKAGES)
    _locked_project(node, index_url(own))
    wheelhouse = tmp_path / "wheelhouse"
    shutil.copytree(own, wheelhouse)
    shutil.rmtree(own)  # what the lock points at is gone
    done = node.run(
        {"environment": {"uv_lock": "proj/uv.lock"}},
        ["python", "-c", IMPORT_ALL],
        index_url(wheelhouse),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WORKLOAD 1.0 1.2" in done.stdout


def test_bad_input_is_one_line_and_exit_2(node: Node) -> None:
    bad = subprocess.run(
        [sys.executable, "-I", "-m", "corral.agent.envbuild", '{"environment": 3}', "--", "x"],
        cwd=node.work,
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stdout + bad.stderr
    assert node.error() == "the environment could not be built: environment: expected an object"
    missing = node.run({"setup": "true"}, ["no-such-program-here"])
    assert missing.returncode == 127
    assert node.error() == "cannot run 'no-such-program-here': No such file or directory"


def test_a_plan_over_linuxs_argument_limit_travels_in_pieces(node: Node, index: str) -> None:
    # One argv string may not exceed 128 KiB; setup may be 64 KiB and requirements more.
    setup = "echo LONG-SETUP\n" + "".join(f"# {i:05d} {'x' * 90}\n" for i in range(600))
    notes = [f"# note {i} {'y' * 900}" for i in range(100)]
    assignment = {"environment": {"requirements": ["alpha", *notes]}, "setup": setup}
    argv = node.argv(assignment, ["python", "-c", IMPORT_ALL], index)
    pieces = argv[4 : argv.index("--")]
    assert len("".join(pieces)) > 128 * 1024 and len(pieces) >= 3
    assert all(len(piece) <= envbuild.PLAN_PIECE for piece in pieces)
    done = node.run(assignment, ["python", "-c", IMPORT_ALL], index)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "LONG-SETUP" in done.stdout and "WORKLOAD 1.0 1.2" in done.stdout


def test_clip_keeps_the_first_line_and_the_end() -> None:
    message = "first line\n" + "\n".join(f"line {i}" for i in range(500)) + "\nthe conclusion"
    clipped = envbuild.clip(message)
    assert len(clipped.encode()) <= envbuild.MAX_ERROR_BYTES
    assert clipped.startswith("first line\n…\n")
    assert clipped.endswith("line 499\nthe conclusion")
    assert envbuild.clip("short") == "short"


def test_the_key_names_the_uv_package_without_running_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version

    monkeypatch.delenv(envbuild.UV_ENV, raising=False)
    assert envbuild.uv_identity() == f"uv-{version('uv')}.dist-info"


def test_uv_trusts_the_nodes_certificates_unless_the_job_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fleet behind a TLS proxy, or a private index with its own CA: uv's own bundle of
    # roots would refuse it where pip and curl on the node succeed.
    from corral.agent.envbuild import _uv_env

    monkeypatch.delenv("UV_SYSTEM_CERTS", raising=False)
    assert _uv_env()["UV_SYSTEM_CERTS"] == "true"
    monkeypatch.setenv("UV_SYSTEM_CERTS", "false")
    assert _uv_env()["UV_SYSTEM_CERTS"] == "false"
