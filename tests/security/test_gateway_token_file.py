"""Issue 9: the gateway's control-plane token comes from an owner-only file, never stays
in its environment, and the gateway creates nothing other users can read."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.gateway.tokenfile import TokenFileError, read_token_file, resolve_token
from gateway.harness import (
    ADMIN_HEADERS,
    GATEWAY_TOKEN,
    FakeControlPlane,
    GatewayProc,
    process_env,
    token_file,
)
from support.cluster import wait_for


def proc_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def check_running_gateway(gateway: GatewayProc, plane: FakeControlPlane) -> None:
    # It follows routes as admin: its first poll may land a moment after it answers healthz.
    wait_for(
        "the gateway's first route poll",
        lambda: f"Bearer {GATEWAY_TOKEN}" in plane.authorizations,
    )
    assert gateway.get("/_corral/load", headers=ADMIN_HEADERS).status_code == 200
    assert GATEWAY_TOKEN.encode() not in Path(f"/proc/{gateway.proc.pid}/environ").read_bytes()
    assert proc_field(gateway.proc.pid, "Umask") == "0077"


@pytest.fixture
def plane() -> Iterator[FakeControlPlane]:
    plane = FakeControlPlane()
    yield plane
    plane.close()


def test_python_m_gateway_reads_the_token_file(tmp_path: Path, plane: FakeControlPlane) -> None:
    gateway = GatewayProc(tmp_path, plane.url)  # the harness passes --token-file
    try:
        check_running_gateway(gateway, plane)
    finally:
        gateway.stop()


def test_corral_gateway_takes_token_file_as_corral_up_starts_it(
    tmp_path: Path, plane: FakeControlPlane
) -> None:
    env = {**process_env(), "CORRAL_HOME": str(tmp_path / "home")}
    env.pop("CORRAL_TOKEN", None)
    argv = [sys.executable, "-m", "corral.cli.main", "gateway"]
    argv += ["--token-file", str(token_file(tmp_path))]
    gateway = GatewayProc(tmp_path, plane.url, argv=argv, env=env)
    try:
        check_running_gateway(gateway, plane)
    finally:
        gateway.stop()


def test_corral_token_file_in_the_environment_names_the_file(
    tmp_path: Path, plane: FakeControlPlane
) -> None:
    env = {**process_env(), "CORRAL_TOKEN_FILE": str(token_file(tmp_path))}
    env.pop("CORRAL_TOKEN", None)
    gateway = GatewayProc(
        tmp_path, plane.url, argv=[sys.executable, "-m", "corral.gateway"], env=env
    )
    try:
        check_running_gateway(gateway, plane)
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    "command",
    [["-m", "corral.gateway"], ["-m", "corral.cli.main", "gateway"]],
    ids=["python-m-corral.gateway", "corral-gateway"],
)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_open_to_others_is_refused_with_the_fix(
    tmp_path: Path, command: list[str], mode: int
) -> None:
    path = token_file(tmp_path)
    path.chmod(mode)
    env = {**process_env(), "CORRAL_HOME": str(tmp_path / "home")}
    argv = [sys.executable, *command, "--port", "1", "--server", "http://127.0.0.1:9"]
    result = subprocess.run(
        [*argv, "--token-file", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and f"chmod 600 {path}" in lines[0]
    assert "Traceback" not in result.stderr


def test_corral_token_from_the_environment_is_removed_once_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", "from-env")
    monkeypatch.delenv("CORRAL_TOKEN_FILE", raising=False)
    assert resolve_token(None, None) == "from-env"
    assert "CORRAL_TOKEN" not in os.environ
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('CORRAL_TOKEN'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.strip() == "None"


def test_a_token_file_wins_over_corral_token_and_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", "from-env")
    assert resolve_token(None, token_file(tmp_path, "from-file")) == "from-file"
    assert "CORRAL_TOKEN" not in os.environ
    with pytest.raises(TokenFileError, match="not both"):
        resolve_token("flag", token_file(tmp_path))
    empty = token_file(tmp_path, "", name="empty")
    with pytest.raises(TokenFileError, match="on one line"):
        read_token_file(empty)
    with pytest.raises(TokenFileError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_a_gateway_given_no_token_opens_load_to_nobody(tmp_path: Path) -> None:
    """No token at all: /_corral/load is open to nobody (it used to be open to all)."""
    routes = tmp_path / "routes.json"
    routes.write_text('{"version": 1, "endpoints": []}')
    env = process_env()
    env.pop("CORRAL_TOKEN", None)
    env.pop("CORRAL_TOKEN_FILE", None)
    argv = [sys.executable, "-m", "corral.gateway", "--routes", str(routes)]
    gateway = GatewayProc(tmp_path, "http://127.0.0.1:9", argv=argv, env=env)
    try:
        assert httpx.get(gateway.url + "/_corral/load", timeout=5).status_code == 401
    finally:
        gateway.stop()
