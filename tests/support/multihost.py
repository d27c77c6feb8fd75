"""A control plane and one agent per host, for multi-host tests and benchmarks.

```
 root namespace: corral server bound to hosts.gateway ── bridge ──┬── host h0: corral agent
   (SQLite under root/home; checkpoints in root/checkpoints,      ├── host h1: corral agent
    a directory every host sees: namespaces share the filesystem)  └── host h2: corral agent
```

Each agent runs inside its host (`Host.popen`), with its own state directory, the host's
address as `--address` (MASTER_ADDR for gangs whose rank 0 it runs) and the virtualenv's
bin first on PATH, so that a job's `python3` has torch and corral. Killing a host
(`Host.kill`) kills its agent, shims and workloads at once; `Host.link_down` cuts it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from support.cluster import ADMIN_TOKEN, JOIN_TOKEN, free_port, wait_for
from support.netns import Host, Hosts

BIN = str(Path(sys.executable).parent)


class HostCluster:
    def __init__(
        self,
        hosts: Hosts,
        root: Path,
        *,
        lost_after: float = 8.0,
        heartbeat: float = 1.0,
        fake_gpus: str | None = "H100:1",
        env: dict[str, str] | None = None,
        host_env: Callable[[Host], dict[str, str]] | None = None,
    ) -> None:
        self.hosts = hosts
        self.root = root
        self.fake_gpus = fake_gpus
        self.port = free_port()
        self.url = f"http://{hosts.gateway}:{self.port}"
        self.checkpoints = root / "checkpoints"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "CORRAL_HOME": str(root / "home"),
            "CORRAL_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
            "CORRAL_BOOTSTRAP_JOIN_TOKEN": JOIN_TOKEN,
            "CORRAL_NODE_LOST_AFTER": str(lost_after),
            "CORRAL_HEARTBEAT_INTERVAL": str(heartbeat),
            "CORRAL_CHECKPOINT_ROOT": str(self.checkpoints),
            "CORRAL_SERVER": self.url,
            "CORRAL_TOKEN": ADMIN_TOKEN,
            "CORRAL_WORKSPACE": "default",
        }
        self.env.pop("CORRAL_DATABASE_URL", None)
        self.env.update(env or {})
        self.host_env = host_env or (lambda _host: {})
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}

    # -- processes ------------------------------------------------------------------------

    def start_server(self) -> None:
        self.server = self._spawn(
            None,
            [
                sys.executable,
                "-m",
                "corral.server",
                "--host",
                self.hosts.gateway,
                "--port",
                str(self.port),
                "--home",
                str(self.root / "home"),
            ],
            self.root / "server.log",
        )
        wait_for(
            "the server to answer /healthz",
            lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200,
        )

    def start_agent(self, host: Host) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "corral.cli.main",
            "agent",
            "--server",
            self.url,
            "--join-token",
            JOIN_TOKEN,
            "--name",
            host.name,
            "--state-dir",
            str(self.state_dir(host)),
            "--address",
            host.address,
            # Workloads here share the test's directory (pytest's, 0700) with the test.
            "--isolation",
            "none",
        ]
        if self.fake_gpus:
            argv += ["--fake-gpus", self.fake_gpus]
        proc = self._spawn(host, argv, self.root / f"agent-{host.name}.log")
        self.agents[host.name] = proc
        return proc

    def start(self) -> None:
        """The server, then an agent on every host; returns once every node is ready."""
        self.start_server()
        for host in self.hosts:
            self.start_agent(host)
        with self.client() as client:
            wait_for(
                "every node to be ready and connected",
                lambda: (
                    sorted(
                        n.name
                        for n in client.list_nodes()
                        if n.condition == "ready" and n.connected
                    )
                    == sorted(h.name for h in self.hosts)
                ),
                timeout=30,
            )

    def _spawn(self, host: Host | None, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            if host is None:
                return subprocess.Popen(
                    argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            env = {**self.env, **self.host_env(host)}
            return host.popen(argv, env=env, stdout=out, stderr=out)

    def close(self) -> None:
        """Everything on the hosts dies with them (Hosts.close); stop the server here."""
        self.hosts.close()
        for proc in self.agents.values():
            _reap(proc)
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)

    # -- reading --------------------------------------------------------------------------

    def client(self):  # type: ignore[no-untyped-def]
        from corral.client import Client

        return Client(self.url, ADMIN_TOKEN, "default")

    def host(self, name: str | None) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def state_dir(self, host: Host) -> Path:
        return self.root / "agents" / host.name

    def progress(self, host: Host, replica_id: str) -> dict[str, Any]:
        """What a replica last wrote with corral.train.report, read straight from its node."""
        path = self.state_dir(host) / "replicas" / replica_id / "status" / "progress.json"
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def replica_exit(self, host: Host, replica_id: str) -> dict[str, Any] | None:
        """The shim's exit.json for a replica, once it has ended."""
        path = self.state_dir(host) / "replicas" / replica_id / "exit.json"
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def replica_output(self, host: Host, replica_id: str) -> str:
        path = self.state_dir(host) / "replicas" / replica_id / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for log in sorted(self.root.glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-tail:]}")
        for out in sorted(self.root.glob("agents/*/replicas/*/output.log")):
            text = out.read_text(errors="replace")[-tail:]
            parts.append(f"--- {out.parent.parent.parent.name}/{out.parent.name} ---\n{text}")
        return "\n".join(parts)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
