"""The one-machine control plane behind `corral up`: a server and an agent as child processes.

No printing here: the `up` and `down` commands report; this module starts, watches and stops.

    corral up ──spawn──▶ corral server   (env CORRAL_HOME, CORRAL_BOOTSTRAP_*; logs/server.log)
              ──poll───▶ GET /healthz
              ──spawn──▶ corral agent    (env CORRAL_JOIN_TOKEN; logs/agent.log)
              ──poll───▶ GET /v1/nodes until a fresh node is ready
              ──write──▶ config.json (server, admin token), up.json (pids)

Children get sessions of their own, so a Ctrl-C in the terminal reaches only `corral up`,
which then stops them in order: the agent first (it stops its replicas), then the server.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from corral.cli.localfiles import LOOPBACK, Tokens, UpState, remove_up, write_up
from corral.cli.procs import Child, Role, StopResult, is_ours, spawn, stop_pid

if TYPE_CHECKING:
    from corral.wire.api import NodeView

_ANY_ADDRESS = {"0.0.0.0", "::", ""}
# Variables that would point a child at some other server or identity.
_NOT_INHERITED = ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE", "CORRAL_JOIN_TOKEN")


class StartupError(Exception):
    """The plane did not come up; `tail` holds the end of the failing child's log."""

    def __init__(self, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tail = tail or []


@dataclass(frozen=True)
class Timeouts:
    server_healthy_s: float = 20.0
    node_ready_s: float = 30.0
    # The agent gives its replicas their grace (5 s by default), then needs time to exit.
    stop_agent_s: float = 15.0
    stop_server_s: float = 10.0


def local_url(host: str, port: int) -> str:
    """The address a client on this machine uses for a server bound to `host`."""
    if host in _ANY_ADDRESS or host in LOOPBACK:
        return f"http://127.0.0.1:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server will: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "0.0.0.0", port))
        except OSError:
            return False
    return True


def pick_port(host: str, port: int, tries: int = 50) -> int:
    for candidate in range(port, min(port + tries, 65536)):
        if port_free(host, candidate):
            return candidate
    last = min(port + tries, 65536) - 1
    raise StartupError(f"no free port in {port}..{last} on {host}; pick one with --port")


def running_pids(st: UpState) -> dict[str, int]:
    return {role: pid for role, pid in st.pids.items() if is_ours(pid)}


# -- the plane -------------------------------------------------------------------------------


@dataclass
class LocalPlane:
    """The children of one `corral up`, started and stopped in order."""

    home: Path
    host: str
    port: int
    self_argv: Sequence[str]
    timeouts: Timeouts = field(default_factory=Timeouts)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    sleep: Callable[[float], None] = time.sleep
    server: Child | None = None
    agent: Child | None = None

    @property
    def url(self) -> str:
        return local_url(self.host, self.port)

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k not in _NOT_INHERITED}
        env.update({"CORRAL_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **extra})
        return env

    def start_server(self, tokens: Tokens) -> None:
        argv = [
            *self.self_argv,
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--home",
            str(self.home),
        ]
        env = self._env(
            {
                "CORRAL_BOOTSTRAP_ADMIN_TOKEN": tokens.admin,
                "CORRAL_BOOTSTRAP_JOIN_TOKEN": tokens.join,
            }
        )
        self.server = spawn("server", argv, env, self.logs / "server.log")

    def wait_healthy(self) -> None:
        from corral.client import Client

        assert self.server is not None
        deadline = time.monotonic() + self.timeouts.server_healthy_s
        with Client(self.url, timeout=1.0) as client:
            while True:
                self._check_alive(self.server)
                if client.health():
                    return
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"the server did not become healthy within "
                        f"{self.timeouts.server_healthy_s:g} s; see {self.server.log}",
                        self.server.tail(),
                    )
                self.sleep(0.1)

    def start_agent(self, tokens: Tokens, fake_gpus: str | None) -> None:
        argv = [
            *self.self_argv,
            "agent",
            "--server",
            self.url,
            "--state-dir",
            str(self.home / "agent"),
            "--stop-replicas-on-exit",
        ]
        if fake_gpus:
            argv += ["--fake-gpus", fake_gpus]
        # The join token goes by environment, not argv, where `ps` would show it.
        env = self._env({"CORRAL_JOIN_TOKEN": tokens.join})
        self.agent = spawn("agent", argv, env, self.logs / "agent.log")

    def wait_node_ready(self, admin_token: str) -> NodeView:
        """A node of this agent's, connected and ready since the agent started."""
        from corral.client import Client, CorralError, Unauthorized

        assert self.server is not None and self.agent is not None
        since = self.agent.started_at - 2.0  # the server's clock is ours, give or take
        deadline = time.monotonic() + self.timeouts.node_ready_s
        seen: NodeView | None = None
        with Client(self.url, admin_token, timeout=2.0) as client:
            while True:
                self._check_alive(self.server)
                self._check_alive(self.agent)
                try:
                    nodes = client.list_nodes()
                except Unauthorized:
                    raise StartupError(
                        "the server rejected the admin token from "
                        f"{self.home / 'config.json'}; delete that file and run `corral up` again"
                    ) from None
                except CorralError:
                    nodes = []
                fresh = [n for n in nodes if (n.last_heartbeat_at or 0.0) >= since]
                ready = [n for n in fresh if n.connected and n.condition == "ready"]
                if ready:
                    return _prefer_this_host(ready)
                seen = _prefer_this_host(fresh) if fresh else seen
                if time.monotonic() >= deadline:
                    state = f" (node {seen.name} is {seen.condition})" if seen else ""
                    raise StartupError(
                        f"the local agent did not report a ready node within "
                        f"{self.timeouts.node_ready_s:g} s{state}; see {self.agent.log}",
                        self.agent.tail(),
                    )
                self.sleep(0.2)

    def _check_alive(self, child: Child) -> None:
        code = child.exit_code()
        if code is not None:
            raise StartupError(
                f"the {child.role} exited with code {code} while starting; see {child.log}",
                child.tail(),
            )

    def record(self, detached: bool) -> UpState:
        pids: dict[str, int] = {
            c.role: c.proc.pid for c in (self.server, self.agent) if c is not None
        }
        st = UpState(
            host=self.host,
            port=self.port,
            server=self.url,
            pids=pids,
            started_at=time.time(),
            detached=detached,
            supervisor_pid=None if detached else os.getpid(),
        )
        write_up(self.home, st)
        return st

    def exited(self) -> Child | None:
        for child in (self.server, self.agent):
            if child is not None and child.exit_code() is not None:
                return child
        return None

    def stop(self) -> list[tuple[Role, StopResult]]:
        """Agent first, so it can stop its replicas while the server still listens."""
        results: list[tuple[Role, StopResult]] = []
        for child, grace in (
            (self.agent, self.timeouts.stop_agent_s),
            (self.server, self.timeouts.stop_server_s),
        ):
            if child is not None:
                results.append((child.role, stop_pid(child.proc.pid, grace)))
                child.proc.poll()  # let Popen know, or it warns that the child still runs
        return results


def stop_recorded(
    home: Path, st: UpState, timeouts: Timeouts | None = None
) -> list[tuple[str, int, StopResult]]:
    """`corral down`: stop what up.json names, agent first, then forget it."""
    timeouts = timeouts or Timeouts()
    write_up(home, replace(st, stopping=True))
    grace = {"agent": timeouts.stop_agent_s, "server": timeouts.stop_server_s}
    results: list[tuple[str, int, StopResult]] = []
    for role in sorted(st.pids, key=lambda r: r != "agent"):
        pid = st.pids[role]
        result: StopResult = stop_pid(pid, grace.get(role, 10.0)) if is_ours(pid) else "gone"
        results.append((role, pid, result))
    remove_up(home)
    return results


def _prefer_this_host(nodes: list[NodeView]) -> NodeView:
    host = socket.gethostname().split(".")[0].lower()
    return next((n for n in nodes if n.name.lower().startswith(host)), nodes[0])
