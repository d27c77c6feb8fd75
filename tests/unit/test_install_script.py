"""providers/install.py's scripts, rendered and run for real against a tiny bundle whose
`corral` records how it was started (and exits as told), in a temporary install dir."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.providers.base import JoinInfo
from corral.providers.install import install_script, uninstall_script, unit_name, user_data

TOKEN = "crj_secret$with'quotes"
JOIN = JoinInfo("http://cp.example:8080", TOKEN, "node-1", {"pool": "p", "note": "a b$c"})

# The fake agent: writes its argv, environment and token file, then exits with the code in
# DIR/exit-code if there is one (counting its starts), else sleeps.
FAKE_MAIN = """
import json, os, sys, time
def main():
    home = os.environ["CORRAL_HOME"]
    d = os.environ["CORRAL_AGENT_INSTALL_DIR"]
    starts = os.path.join(d, "starts")
    with open(starts, "a") as f:
        f.write("x")
    with open(os.path.join(home, "argv.json"), "w") as f:
        json.dump({"argv": sys.argv, "token": open(os.environ["CORRAL_JOIN_TOKEN_FILE"]).read(),
                   "pid": os.getpid()}, f)
    code = os.path.join(d, "exit-code")
    if os.path.exists(code):
        return int(open(code).read())
    time.sleep(600)
"""


def _bundle(path: Path, python: str | None = None) -> Path:
    meta = {
        "python": python or f"{sys.version_info[0]}.{sys.version_info[1]}",
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
    }
    files = {
        "bundle.json": json.dumps(meta).encode(),
        "site-packages/corral/__init__.py": b"",
        "site-packages/corral/cli/__init__.py": b"",
        "site-packages/corral/cli/main.py": FAKE_MAIN.encode(),
        "bin/tool": b"\x7fELF-not-really",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name in ("site-packages", "bin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CORRAL_PYTHON": sys.executable, **env},
    )


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "opt" / "corral"
    _bundle(tmp_path / "bundle.tar.gz")
    yield directory
    _run(uninstall_script(str(directory)))


def _recorded(directory: Path, timeout: float = 10) -> dict[str, object]:
    path = directory / "home" / "argv.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = json.loads(path.read_text())
            if isinstance(value, dict):
                return value
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the agent did not start: {(directory / 'agent.log').read_text()}")


def test_install_starts_the_agent_with_its_token_in_a_0600_file(installed: Path) -> None:
    bundle = installed.parent.parent / "bundle.tar.gz"
    done = _run(install_script(JOIN, str(installed), str(bundle), ["--isolation", "none"], False))
    assert done.returncode == 0, done.stderr
    got = _recorded(installed)
    assert got["token"] == TOKEN
    argv = got["argv"]
    assert isinstance(argv, list)
    assert argv[0] == str(installed / "venv" / "bin" / "corral") and argv[1] == "agent"
    assert argv[argv.index("--server") + 1] == "http://cp.example:8080"
    assert argv[argv.index("--name") + 1] == "node-1"
    assert argv[argv.index("--state-dir") + 1] == str(installed / "state")
    assert "note=a b$c" in argv and "pool=p" in argv and argv[-2:] == ["--isolation", "none"]
    assert not any(TOKEN in a for a in argv)  # never on a command line
    assert (installed / "join-token").stat().st_mode & 0o777 == 0o600
    assert (installed / "venv" / "bin" / "tool").read_bytes().startswith(b"\x7fELF")
    # Readable by replicas' users, writable by the agent's alone; the secrets are not.
    (main,) = installed.glob("venv/lib/python*/site-packages/corral/cli/main.py")
    assert main.stat().st_mode & 0o777 == 0o644
    assert (installed / "venv" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (installed / "agent.env").stat().st_mode & 0o077 == 0
    # The supervisor is a session leader: uninstall stops it and all it started.
    pid = int((installed / "agent.pid").read_text())
    assert os.getsid(pid) == pid


def test_uninstall_stops_everything_and_removes_the_directory(installed: Path) -> None:
    bundle = installed.parent.parent / "bundle.tar.gz"
    assert (
        _run(install_script(JOIN, str(installed), str(bundle), use_systemd=False)).returncode == 0
    )
    agent_pid = int(str(_recorded(installed)["pid"]))
    supervisor = int((installed / "agent.pid").read_text())
    done = _run(uninstall_script(str(installed)))
    assert done.returncode == 0, done.stderr
    assert not installed.exists()
    for pid in (agent_pid, supervisor):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_the_supervisor_restarts_an_agent_that_fails_and_not_one_that_exits_0(
    installed: Path,
) -> None:
    bundle = installed.parent.parent / "bundle.tar.gz"
    installed.mkdir(parents=True)
    (installed / "exit-code").write_text("3")
    assert (
        _run(install_script(JOIN, str(installed), str(bundle), use_systemd=False)).returncode == 0
    )
    deadline = time.monotonic() + 15
    while len((installed / "starts").read_text() if (installed / "starts").exists() else "") < 2:
        assert time.monotonic() < deadline, (installed / "agent.log").read_text()
        time.sleep(0.05)
    assert "exited with status 3; restarting" in (installed / "agent.log").read_text()
    (installed / "exit-code").write_text("0")
    supervisor = int((installed / "agent.pid").read_text())
    deadline = time.monotonic() + 15
    while psutil.pid_exists(supervisor) and psutil.Process(supervisor).status() != "zombie":
        assert time.monotonic() < deadline, "the supervisor kept restarting an agent that exited 0"
        time.sleep(0.05)


def test_reinstall_replaces_the_running_agent(installed: Path) -> None:
    bundle = installed.parent.parent / "bundle.tar.gz"
    assert (
        _run(install_script(JOIN, str(installed), str(bundle), use_systemd=False)).returncode == 0
    )
    first = int(str(_recorded(installed)["pid"]))
    (installed / "home" / "argv.json").unlink()
    assert (
        _run(install_script(JOIN, str(installed), str(bundle), use_systemd=False)).returncode == 0
    )
    second = int(str(_recorded(installed)["pid"]))
    assert second != first
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"


def test_a_python_that_does_not_match_the_bundle_is_one_line(
    installed: Path, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "other.tar.gz", python="2.7")
    done = _run(install_script(JOIN, str(installed), str(bundle), use_systemd=False))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("corral-install: error: python: the agent bundle needs python 2.7")
    assert not (installed / "venv").exists()


def test_no_python_is_one_line(installed: Path) -> None:
    bundle = installed.parent.parent / "bundle.tar.gz"
    script = install_script(JOIN, str(installed), str(bundle), use_systemd=False)
    done = _run(script, CORRAL_PYTHON="python3.99")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "corral-install: error: python: no python3.99 on this host "
        "(install the control plane's Python 3 version)"
    )


def test_uninstall_refuses_a_directory_that_is_not_an_install(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    done = _run(uninstall_script(str(tmp_path / "precious")))
    assert done.returncode == 1 and "holds no corral agent" in done.stderr
    assert (tmp_path / "precious").exists()
    assert _run(uninstall_script(str(tmp_path / "never-installed"))).returncode == 0


def test_systemd_unit_names() -> None:
    assert unit_name("/opt/corral", "n") == "corral-agent.service"
    assert unit_name("/opt/corral/", "n") == "corral-agent.service"
    assert unit_name("/srv/x", "gpu 1/a") == "corral-agent-gpu-1-a.service"


def test_user_data_fetches_with_the_token_from_a_file_and_checks_the_digest() -> None:
    text = user_data(JOIN, agent_args=["--interruption-notices", "aws"])
    assert text.startswith("#!/bin/bash\n")
    assert "/v1/agent/bundle/info" in text and "/v1/agent/bundle" in text
    assert "sha256" in text
    assert "--interruption-notices aws" in text
    # The token is only written into the 0600 file, never an argument of a program.
    token_lines = [ln for ln in text.splitlines() if "crj_secret" in ln]
    assert len(token_lines) == 1 and token_lines[0].lstrip("( ").startswith("umask 077; printf")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_a_node_name_is_text_to_the_script_not_code(installed: Path, tmp_path: Path) -> None:
    """The name may come from a host's hostname or a hosts file: the script, run as root,
    must not expand it."""
    bundle = installed.parent.parent / "bundle.tar.gz"
    marker = tmp_path / "ran"
    name = f'n$(touch {marker})`touch {marker}`"'
    join = JoinInfo(JOIN.server_url, TOKEN, name, {})
    done = _run(install_script(join, str(installed), str(bundle), ["--isolation", "none"], False))
    assert done.returncode == 0, done.stderr
    assert f"started the agent for {name} in" in done.stderr
    assert not marker.exists()
    argv = _recorded(installed)["argv"]
    assert isinstance(argv, list) and argv[argv.index("--name") + 1] == name
