"""`corral node add ssh://…` against a real sshd in a network-namespace host that reaches
nothing but the control plane, and `corral node remove`.

The happy path: the agent bundle goes over SSH, the agent starts as a supervised process
(no systemd here), the node is ready with the ssh labels, runs a job, and `node remove`
leaves no process, no install directory and no node. The failure paths (a key the host
refuses, an address nobody answers, no such Python, an agent that cannot reach the
control plane) each end in one `error: HOST: step NAME: …` line and leave no node, no
usable join token and nothing installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from corral.providers.bundle import BundleInfo, bundle_info
from corral.spec.job import JobSpec
from support.cluster import wait_for
from support.multihost import HostCluster
from support.netns import make_hosts
from support.sshd import NetnsSshd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sshd and namespaces need root")


@dataclass
class World:
    cluster: HostCluster
    sshd: NetnsSshd
    other: NetnsSshd  # a second host, accepting the same key
    root: Path

    def install_dir(self, name: str) -> Path:
        return self.root / "installs" / name

    def corral(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {
            **self.cluster.env,
            "CORRAL_HOME": str(self.root / "cli-home"),
            # Host keys accepted are recorded in ~/.ssh/known_hosts: the test's, not root's.
            "HOME": str(self.root / "home"),
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        return subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def add(
        self, name: str, *extra: str, url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.corral(
            "node",
            "add",
            url or self.sshd.url,
            "--key",
            str(self.sshd.key),
            "--name",
            name,
            "--install-dir",
            str(self.install_dir(name)),
            "--fake-gpus",
            "H100:1",
            *extra,
        )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    """Built once for the module: each test's server finds it in its home's cache."""
    return bundle_info(tmp_path_factory.mktemp("bundle-home"))


@pytest.fixture
def world(tmp_path: Path, bundle: BundleInfo) -> Iterator[World]:
    hosts = make_hosts(2, kind="netns")
    cluster = HostCluster(hosts, tmp_path / "cluster", fake_gpus=None)
    cache = tmp_path / "cluster" / "home" / "bundles"
    cache.mkdir(parents=True)
    os.link(bundle.path, cache / bundle.path.name)
    sshd: NetnsSshd | None = None
    other: NetnsSshd | None = None
    try:
        cluster.start_server()
        sshd = NetnsSshd(hosts[0], tmp_path)
        other = NetnsSshd(hosts[1], tmp_path, client_key=sshd.key)
        yield World(cluster, sshd, other, tmp_path)
    finally:
        print(cluster.logs())
        for log in tmp_path.glob("installs/*/agent.log"):
            print(f"--- {log} ---\n{log.read_text(errors='replace')[-4000:]}")
        leftover = _agents_under(tmp_path / "installs")
        for server in (sshd, other):
            if server is not None:
                server.close()
        cluster.close()  # kills every process in the namespace host, agents included
        assert not leftover, f"agents still running after the test: {leftover}"


def _agents_under(directory: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(directory) + "/" in cmd:
            found.append(f"{proc.info['pid']}: {cmd[:200]}")
    return found


def _usable_join_tokens(world: World) -> list[str]:
    with world.cluster.client() as client:
        return [
            t.name
            for t in client.list_join_tokens()
            if t.state == "active" and t.name.startswith("node-add-")
        ]


def _node_names(world: World) -> set[str]:
    with world.cluster.client() as client:
        return {n.name for n in client.list_nodes()}


def _one_error_line(done: subprocess.CompletedProcess[str], host: str, step: str) -> str:
    assert done.returncode != 0, done.stdout + done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: {host}: step {step}: "), errors[0]
    assert "Traceback" not in done.stderr
    return errors[0]


def _nothing_left(world: World, name: str) -> None:
    assert name not in _node_names(world)
    assert _usable_join_tokens(world) == []
    assert not world.install_dir(name).exists()
    assert _agents_under(world.install_dir(name)) == []


def test_add_runs_a_job_and_remove_cleans_up(world: World) -> None:
    # Strict host keys: the file lists the host's real key.
    known = world.root / "known_hosts"
    host_key = (world.sshd.dir / "host_ed25519.pub").read_text().split()
    known.write_text(f"{world.sshd.host.address} {host_key[0]} {host_key[1]}\n")
    done = world.add(
        "ssh-a", "--rack", "r7", "--label", "team=vision", "--known-hosts", str(known), "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)["nodes"][0]
    assert report["ok"] and report["node"] == "ssh-a"
    assert set(report["steps"]) >= {"connect", "check", "upload", "install", "ready"}

    with world.cluster.client() as client:
        node = next(n for n in client.list_nodes() if n.name == "ssh-a")
        assert node.condition == "ready" and node.connected
        host = world.sshd.host
        assert node.labels["provider"] == "ssh"
        assert node.labels["ssh-host"] == host.address
        assert node.labels["rack"] == "r7" and node.labels["team"] == "vision"
        # The one-use token was used and is no longer usable.
        assert _usable_join_tokens(world) == []
        # The agent runs inside the namespace host, from the install directory.
        in_host = {p for p in host.pids()}
        agents = [
            p
            for p in psutil.process_iter(["pid", "cmdline"])
            if "agent" in (p.info["cmdline"] or [])
            and str(world.install_dir("ssh-a")) in " ".join(p.info["cmdline"] or [])
        ]
        assert agents and all(p.pid in in_host for p in agents)
        token_file = world.install_dir("ssh-a") / "join-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert all(token_file.read_text() not in " ".join(p.info["cmdline"] or []) for p in agents)

        client.submit_job(
            JobSpec.model_validate(
                {"name": "hello", "command": "echo hello-from-ssh", "resources": {"gpus": 1}}
            )
        )
        job = wait_for(
            "the job to succeed on the ssh node",
            lambda: (j := client.get_job("hello")).state in ("succeeded", "failed") and j,
            timeout=90,
        )
        assert job.state == "succeeded", job

    removed = world.corral(
        "node", "remove", "ssh-a", "--key", str(world.sshd.key), "--known-hosts", str(known)
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    _nothing_left(world, "ssh-a")


def test_a_refused_key_is_one_line_and_leaves_nothing(world: World) -> None:
    done = world.corral(
        "node",
        "add",
        world.sshd.url,
        "--key",
        str(world.sshd.wrong_key),
        "--name",
        "ssh-b",
        "--install-dir",
        str(world.install_dir("ssh-b")),
    )
    line = _one_error_line(done, f"root@{world.sshd.host.address}", "connect")
    assert "refused the key" in line
    _nothing_left(world, "ssh-b")


def test_an_unreachable_host_is_one_line_and_leaves_nothing(world: World) -> None:
    subnet = world.cluster.hosts.subnet
    assert subnet is not None
    nobody = str(list(subnet.hosts())[200])  # on the bridge, but no host has it
    done = world.add("ssh-c", url=f"ssh://root@{nobody}")
    line = _one_error_line(done, f"root@{nobody}", "connect")
    assert "unreachable" in line or "no answer" in line
    _nothing_left(world, "ssh-c")


def test_a_host_without_that_python_is_one_line_and_leaves_nothing(world: World) -> None:
    done = world.add("ssh-d", "--python", "python3.99")
    line = _one_error_line(done, f"root@{world.sshd.host.address}", "check")
    assert "no python3.99 on the host" in line and "--python" in line
    _nothing_left(world, "ssh-d")


def test_an_agent_that_never_joins_is_undone(world: World) -> None:
    # Installed and started, but pointed at a port nobody serves: the node never becomes
    # ready; what was installed is stopped and removed, and the token revoked.
    gateway = world.cluster.hosts.gateway
    done = world.add("ssh-e", "--agent-server", f"http://{gateway}:9", "--timeout", "5")
    print(done.stderr)
    line = _one_error_line(done, f"root@{world.sshd.host.address}", "ready")
    assert "not ready within 5 s" in line
    _nothing_left(world, "ssh-e")


def test_a_hosts_file_joins_them_in_parallel_and_reports_each(world: World) -> None:
    subnet = world.cluster.hosts.subnet
    assert subnet is not None
    nobody = str(list(subnet.hosts())[201])
    listing = world.root / "hosts.txt"
    # The namespace hosts share this machine's hostname and filesystem: each line names
    # its node and install dir, as a spreadsheet's columns would.
    listing.write_text(
        "# the rack-12 machines\n"
        f"{world.sshd.url} name=fleet-a install-dir={world.install_dir('fleet-a')}\n"
        f"ssh://root@{world.other.host.address}:22 name=fleet-b "
        f"install-dir={world.install_dir('fleet-b')} team=nlp  # the second one\n"
        "\n"
        f"ssh://root@{nobody} name=fleet-c install-dir={world.install_dir('fleet-c')}\n"
    )
    done = world.corral(
        "node",
        "add",
        "--hosts",
        str(listing),
        "--key",
        str(world.sshd.key),
        "--fake-gpus",
        "H100:1",
        "--rack",
        "r12",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: root@{nobody}: step connect: ")
    rows = {ln.split()[1]: ln.split()[2] for ln in done.stdout.splitlines() if "fleet-" in ln}
    assert rows == {"fleet-a": "ok", "fleet-b": "ok", "fleet-c": "failed"}, done.stdout
    with world.cluster.client() as client:
        nodes = {n.name: n for n in client.list_nodes()}
    assert nodes["fleet-a"].labels["rack"] == "r12" and nodes["fleet-b"].labels["rack"] == "r12"
    assert nodes["fleet-b"].labels["team"] == "nlp" and "team" not in nodes["fleet-a"].labels
    assert nodes["fleet-b"].labels["ssh-host"] == world.other.host.address
    # accept-new: both hosts' keys were pinned in ~/.ssh/known_hosts, made 0600.
    known = world.root / "home" / ".ssh" / "known_hosts"
    assert known.stat().st_mode & 0o777 == 0o600
    pinned = {ln.split()[0]: ln.split()[2] for ln in known.read_text().splitlines()}
    for server in (world.sshd, world.other):
        real = (server.dir / "host_ed25519.pub").read_text().split()[1]
        assert pinned[server.host.address] == real
    # A host showing another key than the pinned one (a machine in its place) is not
    # uninstalled: one line, and the node stays.
    good = known.read_text()
    stranger = (world.sshd.dir / "stranger_ed25519.pub").read_text().split()[1]
    known.write_text(good.replace(pinned[world.sshd.host.address], stranger))
    refused = world.corral("node", "remove", "fleet-a", "--key", str(world.sshd.key))
    assert refused.returncode != 0 and "does not match known_hosts" in refused.stderr
    assert "fleet-a" in _node_names(world)
    known.write_text(good)
    for name in ("fleet-a", "fleet-b"):
        removed = world.corral("node", "remove", name, "--key", str(world.sshd.key))
        assert removed.returncode == 0, removed.stderr
        _nothing_left(world, name)
    _nothing_left(world, "fleet-c")


def test_a_host_key_that_does_not_match_known_hosts_is_refused(world: World) -> None:
    known = world.root / "known_hosts"
    other = (world.sshd.dir / "stranger_ed25519.pub").read_text().split()
    known.write_text(f"{world.sshd.host.address} {other[0]} {other[1]}\n")
    done = world.add("ssh-f", "--known-hosts", str(known))
    line = _one_error_line(done, f"root@{world.sshd.host.address}", "connect")
    assert "does not match known_hosts" in line
    _nothing_left(world, "ssh-f")
