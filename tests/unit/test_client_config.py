"""Where the SDK finds its server and token: config.json, then CORRAL_*, then arguments."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from corral.client import (
    Client,
    ConfigError,
    corral_home,
    read_config,
    resolve_settings,
    write_config,
)


def test_home_is_corral_home_else_dot_corral(tmp_path: Path) -> None:
    assert corral_home({"CORRAL_HOME": str(tmp_path)}) == tmp_path
    assert corral_home({}) == Path.home() / ".corral"


def test_config_is_written_private_and_read_back(tmp_path: Path) -> None:
    path = write_config(tmp_path / "home", "http://h:1", "crl_x", "default")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config(tmp_path / "home") == {
        "server": "http://h:1",
        "token": "crl_x",
        "workspace": "default",
    }


def test_precedence_defaults_then_file_then_env_then_arguments(tmp_path: Path) -> None:
    assert resolve_settings(tmp_path, env={}).server == "http://127.0.0.1:7390"
    write_config(tmp_path, "http://file:1", "file-token", "file-ws")
    s = resolve_settings(tmp_path, env={})
    assert (s.server, s.token, s.workspace) == ("http://file:1", "file-token", "file-ws")
    env = {"CORRAL_SERVER": "env:2", "CORRAL_TOKEN": "env-token", "CORRAL_WORKSPACE": "env-ws"}
    s = resolve_settings(tmp_path, env=env)
    assert (s.server, s.token, s.workspace) == ("http://env:2", "env-token", "env-ws")
    s = resolve_settings(tmp_path, env=env, server="http://arg:3/", workspace="arg-ws")
    assert (s.server, s.token, s.workspace) == ("http://arg:3", "env-token", "arg-ws")
    assert "env-token" not in repr(s)


def test_a_broken_config_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json is not valid JSON"):
        resolve_settings(tmp_path, env={})


def test_from_config_uses_the_saved_server_and_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE"):
        monkeypatch.delenv(key, raising=False)
    write_config(tmp_path, "http://saved:9", "crl_saved", "team")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": []})

    with Client.from_config(tmp_path, transport=httpx.MockTransport(handler)) as c:
        assert c.list_jobs() == []
    assert str(seen[0].url) == "http://saved:9/v1/workspaces/team/jobs"
    assert seen[0].headers["authorization"] == "Bearer crl_saved"
    assert json.loads((tmp_path / "config.json").read_text())["workspace"] == "team"
