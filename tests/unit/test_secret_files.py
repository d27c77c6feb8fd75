"""Tokens reach corral's processes in private files, and a file others may read is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.secretfile import SecretFileError, read_secret_file, write_secret_file
from corral.server.config import ServerOptions, SettingError


def test_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write_secret_file(path, "crj_abc")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret_file(path) == "crj_abc"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_file_others_may_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "t"
    write_secret_file(path, "crj_abc")
    path.chmod(mode)
    with pytest.raises(SecretFileError, match=f"chmod 600 {path}"):
        read_secret_file(path)


def test_the_agent_refuses_a_readable_join_token_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "join"
    write_secret_file(path, "crj_abc")
    path.chmod(0o644)
    result = CliRunner().invoke(
        build_app(),
        ["agent", "--server", "http://127.0.0.1:9", "--join-token-file", str(path)],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: --join-token-file:") and "chmod 600" in result.output


def test_the_server_reads_bootstrap_tokens_from_files_and_forgets_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = tmp_path / "admin"
    write_secret_file(admin, "crl_from_file")
    monkeypatch.setenv("CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE", str(admin))
    monkeypatch.setenv("CORRAL_BOOTSTRAP_JOIN_TOKEN", "crj_from_env")
    options = ServerOptions.from_env(home=tmp_path)
    assert options.bootstrap_admin_token == "crl_from_file"
    assert options.bootstrap_join_token == "crj_from_env"
    import os

    assert "CORRAL_BOOTSTRAP_JOIN_TOKEN" not in os.environ  # no child inherits it
    admin.chmod(0o644)
    with pytest.raises(SettingError, match="CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE"):
        ServerOptions.from_env(home=tmp_path)
