"""providers/ssh.py without a host: ssh:// URLs, the check step's verdicts on what a host
reports, and the static provider."""

from __future__ import annotations

import asyncio
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.cli.nodehosts import AddOptions, targets
from corral.cli.output import CliError
from corral.providers.base import LaunchErrorKind, LaunchRequest, ProviderError
from corral.providers.ssh import SshProvider, SshTarget, StepFailed
from corral.providers.ssh_check import BundleMeta, HostFacts, check

BUNDLE = BundleMeta(
    f"{sys.version_info[0]}.{sys.version_info[1]}",
    sys.implementation.name,
    sysconfig.get_platform(),
    50 * 2**20,
)


def test_targets_parse_and_print() -> None:
    assert SshTarget.parse("ssh://ubuntu@10.0.0.5") == SshTarget("ubuntu", "10.0.0.5", 22)
    assert SshTarget.parse("root@gpu-1:2222") == SshTarget("root", "gpu-1", 2222)
    assert str(SshTarget("root", "gpu-1", 2222)) == "root@gpu-1:2222"
    assert str(SshTarget("root", "gpu-1")) == "root@gpu-1"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ssh://gpu-1", "name the user, e.g. ssh://root@gpu-1"),
        ("http://root@gpu-1", "expected ssh://user@host[:port]"),
        ("ssh://root@gpu-1:99999", "port is not a number from 1 to 65535"),
        ("ssh://root@gpu-1/path", "expected ssh://user@host[:port]"),
    ],
)
def test_bad_targets_say_what_is_expected(url: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        SshTarget.parse(url)
    assert says in str(caught.value) and repr(url) in str(caught.value)


def test_labels_round_trip() -> None:
    target = SshTarget("ops", "10.1.2.3", 2200)
    labels = target.labels("/srv/corral")
    assert labels["provider"] == "ssh"
    assert SshTarget.from_labels(labels) == (target, "/srv/corral")
    assert SshTarget.from_labels({"provider": "aws"}) is None


@dataclass
class _Done:
    stdout: str
    stderr: str = ""
    exit_status: int = 0


class _FakeConn:
    """Answers the probe with what a host would print."""

    def __init__(self, facts: dict[str, str], gpus: tuple[str, ...] = ()) -> None:
        self.lines = [f"{k}={v}" for k, v in facts.items()] + [f"gpu={g}" for g in gpus]

    async def run(self, command: str, input: str | None = None, check: bool = False) -> _Done:
        assert command == "sh -s" and input is not None and "nvidia-smi" in input
        return _Done("\n".join(self.lines) + "\n")


def _host(**changes: str | None) -> dict[str, str]:
    facts: dict[str, str | None] = {
        "os": "Linux",
        "arch": "x86_64",
        "uid": "0",
        "user": "root",
        "distro": "Ubuntu 22.04",
        "python_path": "/usr/bin/python3",
        "python": f"{BUNDLE.python}.4",
        "implementation": BUNDLE.implementation,
        "platform": BUNDLE.platform,
        "venv": "1",
        "disk_kb": str(10 * 2**20),
        "tmp_kb": str(10 * 2**20),
        "writable": "1",
        "tar": "1",
        "systemd": "1",
    }
    facts.update(changes)
    return {k: v for k, v in facts.items() if v is not None}


def _check(facts: dict[str, str], gpus: tuple[str, ...] = (), **kw: Any) -> HostFacts:
    conn: Any = _FakeConn(facts, gpus)
    return asyncio.run(check(conn, BUNDLE, "/opt/corral", **kw))


def _refusal(facts: dict[str, str], gpus: tuple[str, ...] = (), **kw: Any) -> str:
    with pytest.raises(StepFailed) as caught:
        _check(facts, gpus, **kw)
    assert caught.value.step == "check"
    text = str(caught.value)
    assert "\n" not in text and text.startswith("step check: ")
    return text


def test_a_good_host_passes_with_what_it_is() -> None:
    facts = _check(_host(nvidia_smi="1"), ("NVIDIA H100 80GB HBM3, 550.54",), require_gpus=True)
    assert facts.sudo == "" and facts.systemd and facts.python_path == "/usr/bin/python3"
    assert facts.gpus == ("NVIDIA H100 80GB HBM3, 550.54",)


def test_no_python_names_what_the_control_plane_needs() -> None:
    text = _refusal(_host(python_path="", python=None))
    assert "no python3 on the host" in text and BUNDLE.describe() in text


def test_another_python_version_is_refused_naming_both() -> None:
    text = _refusal(_host(python="3.9.2"))
    assert "3.9.2" in text and BUNDLE.describe() in text and "--python" in text


def test_another_platform_is_refused() -> None:
    text = _refusal(_host(platform="linux-aarch64", arch="aarch64"))
    assert "linux-aarch64" in text


def test_too_little_disk() -> None:
    assert "MB free for /opt/corral" in _refusal(_host(disk_kb="1024"))


def test_not_root_without_sudo_cannot_install_into_a_system_directory() -> None:
    text = _refusal(_host(uid="1000", user="ops", writable=None))
    assert "ops may not write /opt/corral" in text and "sudo" in text


def test_not_root_with_sudo_uses_it() -> None:
    facts = _check(_host(uid="1000", user="ops", writable=None, sudo="1"))
    assert facts.sudo == "sudo -n " and facts.systemd


def test_a_user_directory_without_root_gets_no_systemd_unit() -> None:
    facts = _check(_host(uid="1000", user="ops"))
    assert facts.sudo == "" and not facts.systemd


def test_gpus_required_but_absent() -> None:
    assert "no nvidia-smi" in _refusal(_host(), require_gpus=True)
    assert "lists no GPUs" in _refusal(_host(nvidia_smi="1"), require_gpus=True)


def test_not_linux() -> None:
    assert "the host runs Darwin" in _refusal(_host(os="Darwin"))


def test_the_ssh_provider_is_static() -> None:
    nodes = [
        ("gpu-1", {**SshTarget("root", "10.0.0.1").labels("/opt/corral"), "pool": "rack12"}),
        ("gpu-2", {**SshTarget("root", "10.0.0.2").labels("/opt/corral"), "pool": "other"}),
        ("cloud-1", {"provider": "aws", "pool": "rack12"}),
    ]
    provider = SshProvider(lambda: nodes)
    assert provider.static and provider.name == "ssh"
    assert [i.node_name for i in provider.list("rack12")] == ["gpu-1"]
    assert [i.provider_id for i in provider.list()] == ["root@10.0.0.1", "root@10.0.0.2"]
    request = LaunchRequest("rack12", "x", "r", None, None, False, ())
    with pytest.raises(ProviderError) as caught:
        provider.launch(request)
    assert caught.value.kind is LaunchErrorKind.INVALID
    assert str(caught.value) == "ssh pools are static: add hosts with corral node add"


BASE = AddOptions(None, None, {"zone": "a"}, None, "/opt/corral", "python3", False, "", (), 1)


def test_a_hosts_file_gives_each_line_its_own_name_rack_dir_and_labels(tmp_path: Path) -> None:
    listing = tmp_path / "hosts"
    listing.write_text(
        "# rack 12\n"
        "ssh://root@10.0.0.1 name=gpu-1 rack=r12 team=nlp\n"
        "\n"
        "ssh://ops@10.0.0.2:2222   # defaults\n"
        "ssh://root@10.0.0.3 install-dir=/srv/corral/\n"
    )
    found = targets(["root@gpu-0"], listing, BASE)
    assert [str(t) for t, _ in found] == [
        "root@gpu-0",
        "root@10.0.0.1",
        "ops@10.0.0.2:2222",
        "root@10.0.0.3",
    ]
    first = found[1][1]
    assert first.name == "gpu-1" and first.labels == {"zone": "a", "rack": "r12", "team": "nlp"}
    assert found[0][1] is BASE and found[2][1] is BASE
    assert found[3][1].install_dir == "/srv/corral"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ssh://root@h1 oops\n", ":1: 'oops': expected KEY=VALUE after the URL"),
        ("# nothing\n\n", "no hosts in it"),
        ("ssh://root@h1 provider=aws\n", ":1: label provider: set by node add itself"),
        ("ssh://root@h1\nssh://h2\n", ":2: 'ssh://h2': name the user, e.g. ssh://root@h2"),
        ("ssh://root@h1:0x\n", ":1: 'ssh://root@h1:0x': the port is not a number"),
    ],
)
def test_a_bad_hosts_file_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    listing = tmp_path / "hosts"
    listing.write_text(text)
    with pytest.raises(CliError) as caught:
        targets([], listing, BASE)
    assert says in caught.value.message and "\n" not in caught.value.message
    assert caught.value.code == 2


def test_a_bad_url_among_good_ones_is_refused_before_anything() -> None:
    with pytest.raises(CliError) as caught:
        targets(["root@h1", "http://root@h2", "root@h3"], None, BASE)
    assert caught.value.message == "host 'http://root@h2': expected ssh://user@host[:port]"
    assert caught.value.code == 2


def test_an_accepted_host_key_is_pinned_in_a_0600_known_hosts(tmp_path: Path) -> None:
    import asyncssh

    from corral.providers import ssh_hostkeys

    path = tmp_path / "ssh" / "known_hosts"
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    assert ssh_hostkeys.listed(path, "10.0.0.1", 2222) is None  # no file: not listed
    ssh_hostkeys.remember(path, "10.0.0.1", 2222, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_text().startswith("[10.0.0.1]:2222 ssh-ed25519 ")
    known = ssh_hostkeys.listed(path, "10.0.0.1", 2222)
    assert known is not None
    assert {k.public_data for k in known.match("10.0.0.1", "10.0.0.1", 2222)[0]} == {
        key.public_data
    }
    # The same address on another port is another host: not listed, and a second key is
    # appended on a line of its own even after a file that ends without a newline.
    assert ssh_hostkeys.listed(path, "10.0.0.1", 22) is None
    path.write_text(path.read_text().rstrip("\n"))
    ssh_hostkeys.remember(path, "10.0.0.1", 22, other)
    assert ssh_hostkeys.listed(path, "10.0.0.1", 2222) is not None
    assert ssh_hostkeys.listed(path, "10.0.0.1", 22) is not None
    assert len(path.read_text().splitlines()) == 2


def test_remove_refuses_a_host_known_hosts_does_not_list(tmp_path: Path) -> None:
    from corral.providers.ssh import remove_agent

    target = SshTarget("root", "192.0.2.1")  # TEST-NET: never dialled, refused before
    with pytest.raises(StepFailed) as caught:
        asyncio.run(remove_agent(target, "/opt/corral", None, tmp_path / "known_hosts"))
    assert caught.value.step == "connect"
    assert "does not list the host key of 192.0.2.1" in str(caught.value)
    assert not (tmp_path / "known_hosts").exists()
