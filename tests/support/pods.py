"""Dev pods reached the way a user reaches them: the real CLI, the generated ssh config and
Debian's OpenSSH client (ssh, scp, sftp), against a real control plane and a confined agent
(root, as on a real node). Shared by tests/integration/test_pods_ssh.py and
tests/security/test_pod_sessions.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.cluster import ADMIN_TOKEN, Cluster, wait_for

CORRAL = [sys.executable, "-m", "corral.cli.main"]


class PodUser:
    """One user of the cluster: a HOME and a CORRAL_HOME of their own (the real ~/.ssh is
    never touched), a token and a workspace; runs the CLI and OpenSSH as that user."""

    def __init__(self, cluster: Cluster, home: Path, token: str, workspace: str) -> None:
        self.cluster = cluster
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.workspace = workspace
        self.env = {
            **cluster.env,
            "HOME": str(home),
            "CORRAL_HOME": str(home / ".corral"),
            "CORRAL_TOKEN": token,
            "CORRAL_WORKSPACE": workspace,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    @property
    def ssh_config(self) -> Path:
        return self.home / ".ssh" / "config"

    def corral(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CORRAL, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def ssh_argv(self, *args: str, program: str = "ssh") -> list[str]:
        """OpenSSH reads the passwd database's home, not $HOME: name the config (-F)."""
        found = shutil.which(program)
        assert found, f"{program} (openssh-client) is not installed"
        return [found, "-F", str(self.ssh_config), "-o", "BatchMode=yes", *args]

    def ssh(
        self, *args: str, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ssh_argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def pod(self, name: str) -> dict[str, Any]:
        got = self.corral("pod", "get", name, "--json")
        data: dict[str, Any] = json.loads(got.stdout)
        return data

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            f"pod {name} to be {state}",
            lambda: (p := self.pod(name))["state"] == state and p,
            timeout=timeout,
            interval=0.3,
        )

    def wait_event(self, name: str, probe: Any, what: str, timeout: float = 20) -> dict[str, Any]:
        """The first of the pod's events for which `probe(event)` holds."""
        return wait_for(
            what,
            lambda: next((e for e in self.pod(name)["events"] if probe(e)), None),
            timeout=timeout,
            interval=0.3,
        )


def session_events(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in pod["events"] if e["kind"] == "session"]


@contextmanager
def shared_volume_root() -> Iterator[Path]:
    """A volume root outside pytest's 0700 directories (a confined pod's user must reach its
    working directory there), as a fleet's shared mount would be."""
    base = Path("/var/lib") / f"corral-pod-test-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    try:
        yield base / "volumes"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def start_cluster(root: Path, volume_root: Path, *agent_args: str) -> Cluster:
    """A control plane and one confined agent, `node-a`, ready."""
    cluster = Cluster(root)
    cluster.start_server()
    cluster.agent("node-a", "--volume-root", str(volume_root), *agent_args, isolation="user")
    cluster.wait_node_ready("node-a")
    return cluster


def admin(cluster: Cluster, root: Path, workspace: str = "default") -> PodUser:
    return PodUser(cluster, root / "admin-home", ADMIN_TOKEN, workspace)


def write_pod_yaml(path: Path, name: str, command: str, **fields: Any) -> Path:
    lines = [f"name: {name}", f"command: {json.dumps(command)}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def http_server_command(port: int, body: str) -> str:
    """A pod's command: an HTTP server on its loopback serving `index.txt` = body from a
    directory of its own (not the working directory tests copy files into)."""
    return (
        f"mkdir -p /tmp/www && printf %s {body} > /tmp/www/index.txt && "
        f"exec python3 -m http.server {port} --bind 127.0.0.1 --directory /tmp/www"
    )
