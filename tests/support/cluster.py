"""Real processes for integration tests: a control plane and agents, started and killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx

if TYPE_CHECKING:
    import pytest

T = TypeVar("T")
ADMIN_TOKEN = "crl_integration-admin"
JOIN_TOKEN = "crj_integration-join"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as exc:  # the thing may not be up yet
            last = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def send(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """One control plane and any number of agents, all real processes on loopback."""

    def __init__(self, root: Path, *, lost_after: float = 6.0) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(root / "home"),
            "CORRAL_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
            "CORRAL_BOOTSTRAP_JOIN_TOKEN": JOIN_TOKEN,
            "CORRAL_NODE_LOST_AFTER": str(lost_after),
            "CORRAL_HEARTBEAT_INTERVAL": "0.5",
            "CORRAL_SERVER": self.url,
            "CORRAL_TOKEN": ADMIN_TOKEN,
            "CORRAL_WORKSPACE": "default",
        }
        self.env.pop("CORRAL_DATABASE_URL", None)
        self.server = Proc(
            [sys.executable, "-m", "corral.server", "--port", str(self.port)],
            self.env,
            root / "server.log",
        )
        self.agents: dict[str, Proc] = {}

    def start_server(self) -> None:
        self.server.start()
        wait_for(
            "the server to answer /healthz",
            lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200,
        )

    def agent(self, name: str, *extra: str, isolation: str = "none") -> Proc:
        """An agent. Unconfined by default: these tests hand files to their workloads through
        the test's own directory, which a confined workload's user cannot enter (pytest's
        are 0700). tests/security runs confined agents (`isolation="user"`)."""
        proc = Proc(
            [
                sys.executable,
                "-m",
                "corral.cli.main",
                "agent",
                "--server",
                self.url,
                "--join-token",
                JOIN_TOKEN,
                "--name",
                name,
                "--state-dir",
                str(self.root / "agents" / name),
                "--isolation",
                isolation,
                *extra,
            ],
            self.env,
            self.root / f"agent-{name}.log",
        )
        self.agents[name] = proc
        proc.start()
        return proc

    def gateway(self, gateway_id: str) -> Proc:
        """A gateway for this control plane on a free port, not yet started (start it once
        the server answers). Call it before start_server: the server learns the gateway's
        address (CORRAL_GATEWAY_PUBLIC_URL, where endpoints' URLs point) from its env."""
        port = free_port()
        self.env["CORRAL_GATEWAY_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "corral.gateway", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--server", self.url, "--token", ADMIN_TOKEN]
        return Proc([*argv, "--id", gateway_id], self.env, self.root / f"{gateway_id}.log")

    def client(self, token: str = ADMIN_TOKEN, workspace: str = "default"):  # type: ignore[no-untyped-def]
        from corral.client import Client

        return Client(self.url, token, workspace)

    def wait_node_ready(self, name: str) -> None:
        with self.client() as client:
            wait_for(
                f"node {name} to be ready and connected",
                lambda: any(
                    n.name == name and n.condition == "ready" and n.connected
                    for n in client.list_nodes()
                ),
            )

    def close(self) -> None:
        for proc in self.agents.values():
            proc.env = self.env
            # Integration agents leave replicas behind on purpose (restart tests); stop them.
            proc.stop(signal.SIGKILL)
        self.server.stop()
        _kill_replicas(self.root / "agents")


def _kill_replicas(agents_dir: Path) -> None:
    """Kill every workload a test's agents started, and their lifelines (they outlive
    agents by design)."""
    import json

    for line in agents_dir.glob("*/lifeline.json"):
        try:
            pid = json.loads(line.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int) and pid > 1:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    for shim in agents_dir.glob("*/replicas/*/shim.json"):
        try:
            info = json.loads(shim.read_text())
        except (OSError, ValueError):
            continue
        for key in ("pgid", "workload_pgid"):
            pgid = info.get(key)
            if isinstance(pgid, int) and pgid > 1:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
        for key in ("shim_pid", "pid"):
            pid = info.get(key)
            if isinstance(pid, int) and pid > 1:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def report_cluster_logs(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """A failed test's report gets its cluster's server and agent logs: they say why
    (a conftest's pytest_runtest_makereport calls this)."""
    if call.when != "call" or call.excinfo is None:
        return
    c = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if isinstance(c, Cluster):
        parts = [f"--- server log ---\n{c.server.output()[-4000:]}"]
        for name, proc in c.agents.items():
            parts.append(f"--- agent {name} log ---\n{proc.output()[-4000:]}")
        item.add_report_section("call", "cluster logs", "\n".join(parts))
