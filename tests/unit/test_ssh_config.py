"""`corral pod ssh-config`: corral's own ssh config with one host per pod, the pinned host
key, the Include at the top of ~/.ssh/config (once), corral's key made and registered when
the workspace has none; and never a token in any file."""

from __future__ import annotations

import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from test_cli_pod import HOST_KEY, FakeApi, run

from corral.cli.sshfiles import (
    SshPaths,
    add_include,
    host_block,
    known_hosts_text,
    proxy_command,
    replace_block,
)


@pytest.fixture
def api() -> FakeApi:
    api = FakeApi()
    api.pod("dev", {"name": "dev"})
    api.pod("big", {"name": "big"})
    return api


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "user"
    monkeypatch.setenv("HOME", str(home))
    return home


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_one_host_per_pod_and_includes_it_once(
    api: FakeApi, user_home: Path, tmp_path: Path
) -> None:
    corral_home = tmp_path / "corral home"  # a space: quoted where ssh reads it
    result = run(api, corral_home, "pod", "ssh-config")
    assert result.exit_code == 0, result.output

    config = corral_home / "ssh" / "config"
    text = config.read_text()
    for name in ("big", "dev"):
        block = text.split(f"Host {name}\n", 1)[1].split("Host ", 1)[0]
        assert f"  HostName {name}\n" in block
        assert "  User corral\n" in block
        assert "  HostKeyAlias corral.team\n" in block
        assert f'  UserKnownHostsFile "{corral_home}/ssh/known_hosts"\n' in block
        assert "  StrictHostKeyChecking yes\n" in block
        assert f'  IdentityFile "{corral_home}/ssh/id_ed25519"\n' in block
        proxy = block.split("  ProxyCommand ", 1)[1].split("\n", 1)[0]
        argv = shlex.split(proxy)
        assert Path(argv[0]).is_absolute() and Path(argv[0]).exists()
        assert argv[-5:] == ["pod", "proxy", "--workspace", "team", name]
    assert "tok" not in text.replace("known_hosts", "")  # the token is in no file
    # ... and where it comes from the environment, ssh from an IDE would not find it.
    assert "warning: the token comes from CORRAL_TOKEN" in result.output
    assert _mode(config) == 0o600

    known = (corral_home / "ssh" / "known_hosts").read_text()
    assert known == f"corral.team {HOST_KEY}\n"

    user_config = user_home / ".ssh" / "config"
    assert user_config.read_text().startswith(f'Include "{config}"\n')
    assert _mode(user_home / ".ssh") == 0o700
    assert _mode(user_config) == 0o600

    # Again: the same files, one Include.
    assert run(api, corral_home, "pod", "ssh-config").exit_code == 0
    assert user_config.read_text().count("Include") == 1
    assert config.read_text() == text
    assert (corral_home / "ssh" / "known_hosts").read_text() == known


def test_makes_and_registers_a_key_when_the_workspace_has_none(
    api: FakeApi, user_home: Path, tmp_path: Path
) -> None:
    corral_home = tmp_path / "ch"
    result = run(api, corral_home, "pod", "ssh-config")
    assert result.exit_code == 0, result.output
    key = corral_home / "ssh" / "id_ed25519"
    assert _mode(key) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    public = (corral_home / "ssh" / "id_ed25519.pub").read_text().strip()
    assert [k["public_key"] for k in api.keys] == [public]
    assert api.keys[0]["name"].startswith("corral-")
    assert f"made an SSH key for corral: {key}" in result.output
    # A second run registers nothing more.
    assert run(api, corral_home, "pod", "ssh-config").exit_code == 0
    assert len(api.keys) == 1


def test_a_workspace_with_a_key_gets_no_new_one(
    api: FakeApi, user_home: Path, tmp_path: Path
) -> None:
    api.keys.append(
        {
            "name": "laptop",
            "workspace": "team",
            "fingerprint": "SHA256:y",
            "public_key": "ssh-ed25519 AAAA mine",
            "added_by": "ann",
            "created_at": 0,
        }
    )
    corral_home = tmp_path / "ch"
    assert run(api, corral_home, "pod", "ssh-config").exit_code == 0
    assert not (corral_home / "ssh" / "id_ed25519").exists()
    assert "IdentityFile" not in (corral_home / "ssh" / "config").read_text()
    assert len(api.keys) == 1


def test_include_goes_on_top_of_an_existing_config_and_keeps_its_mode(tmp_path: Path) -> None:
    user_config = tmp_path / ".ssh" / "config"
    user_config.parent.mkdir()
    user_config.write_text("Host work\n  HostName work.example.com\n")
    user_config.chmod(0o644)
    ours = tmp_path / "corral" / "ssh" / "config"
    assert add_include(user_config, ours) is True
    assert add_include(user_config, ours) is False
    assert user_config.read_text() == (
        f"Include {ours}\n\nHost work\n  HostName work.example.com\n"
    )
    assert _mode(user_config) == 0o644


def test_other_workspaces_blocks_stay(tmp_path: Path) -> None:
    paths = SshPaths(tmp_path)
    one = host_block("one", ["a"], ["/bin/corral"], None, paths)
    two = host_block("two", ["b"], ["/bin/corral"], None, paths)
    text = replace_block(replace_block("", "one", one), "two", two)
    text = replace_block(text, "one", host_block("one", ["c"], ["/bin/corral"], None, paths))
    assert "Host b\n" in text and "Host c\n" in text and "Host a\n" not in text
    hosts = known_hosts_text(
        "corral.one ssh-ed25519 OLD\nother ssh-rsa X\n", "one", "ssh-ed25519 NEW"
    )
    assert hosts == "other ssh-rsa X\ncorral.one ssh-ed25519 NEW\n"


def test_proxy_command_is_one_shell_line_with_percent_escaped() -> None:
    line = proxy_command(["/opt/my tools/corral"], "http://h:1/%x", "pod", "proxy", "dev")
    assert line == "'/opt/my tools/corral' --server http://h:1/%%x pod proxy dev"


def test_openssh_accepts_the_generated_config(
    api: FakeApi, user_home: Path, tmp_path: Path
) -> None:
    """`ssh -G` parses the user's config, its Include and corral's hosts, and resolves the
    host as ssh would connect to it. (-F: OpenSSH finds ~ in the password database, not
    $HOME.)"""
    corral_home = tmp_path / "ch"
    assert run(api, corral_home, "pod", "ssh-config").exit_code == 0
    user_config = user_home / ".ssh" / "config"
    shown = subprocess.run(
        ["ssh", "-F", str(user_config), "-G", "dev"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    options = dict(line.split(" ", 1) for line in shown.splitlines() if " " in line)
    assert options["user"] == "corral"
    assert options["hostkeyalias"] == "corral.team"
    assert options["stricthostkeychecking"] == "true"
    assert options["proxycommand"].endswith("pod proxy --workspace team dev")
    assert options["userknownhostsfile"] == str(corral_home / "ssh" / "known_hosts")


def test_pod_create_refreshes_the_hosts_once_set_up(
    api: FakeApi, user_home: Path, tmp_path: Path
) -> None:
    corral_home = tmp_path / "ch"
    config = corral_home / "ssh" / "config"
    assert run(api, corral_home, "pod", "create", "first").exit_code == 0
    assert not config.exists()  # not set up: nothing written behind the user's back
    assert run(api, corral_home, "pod", "ssh-config").exit_code == 0
    result = run(api, corral_home, "pod", "create", "second")
    assert result.exit_code == 0, result.output
    assert "Host second\n" in config.read_text()
    assert "ssh second" in result.output
