"""The one-machine control plane behind `corral up`: a server, a gateway and an agent as
child processes.

No printing here: the `up` and `down` commands report; this module starts, watches and stops.

    corral up ──pick───▶ the API port and the gateway port (the server must know the
                         gateway's URL when it starts: it shows it in endpoint views)
              ──write──▶ secrets/ (0700): the admin and join tokens, one 0600 file each
              ──spawn──▶ corral server   (env CORRAL_HOME, CORRAL_BOOTSTRAP_*_FILE,
                                          CORRAL_GATEWAY_PUBLIC_URL; logs/server.log)
              ──poll───▶ GET /healthz
              ──spawn──▶ corral gateway  (--token-file secrets/admin-token; logs/gateway.log)
              ──spawn──▶ corral agent    (--join-token-file secrets/join-token; logs/agent.log)
              ──poll───▶ GET /v1/nodes until a fresh node is ready,
                         then the gateway's GET /_corral/healthz (up long before)
              ──write──▶ config.json (server, admin token), up.json (pids)

No token is ever in a child's environment or argv: any process of the same user reads
those in /proc (and a replica's workload may be such a process where the agent cannot
confine it). Everything under the home is private to its user (0700 / 0600).

Children get sessions of their own, so a Ctrl-C in the terminal reaches only `corral up`,
which then stops them in order: the gateway first (it finishes open requests while the
replicas still serve), then the agent (it stops its replicas), then the server.
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
from corral.cli.secrets import write_secret_file

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
    # The gateway drains open requests (streams too) for up to 30 s on SIGTERM; a local
    # plane being stopped does not wait that long for them.
    stop_gateway_s: float = 10.0

    def stop_grace(self, role: str) -> float:
        grace = {
            "gateway": self.stop_gateway_s,
            "agent": self.stop_agent_s,
            "server": self.stop_server_s,
        }
        return grace.get(role, 10.0)


# The order in which a plane stops: see the module's docstring.
STOP_ORDER: tuple[Role, ...] = ("gateway", "agent", "server")


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


def pick_port(
    host: str, port: int, tries: int = 50, avoid: frozenset[int] = frozenset(), flag: str = "--port"
) -> int:
    """`port`, or the next free one; never one in `avoid` (picked for another child, which
    has not bound it yet)."""
    for candidate in range(port, min(port + tries, 65536)):
        if candidate not in avoid and port_free(host, candidate):
            return candidate
    last = min(port + tries, 65536) - 1
    raise StartupError(f"no free port in {port}..{last} on {host}; pick one with {flag}")


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
    # None: no gateway (`corral up --no-gateway`).
    gateway_port: int | None = None
    server: Child | None = None
    gateway: Child | None = None
    agent: Child | None = None

    @property
    def url(self) -> str:
        return local_url(self.host, self.port)

    @property
    def gateway_url(self) -> str | None:
        return None if self.gateway_port is None else local_url(self.host, self.gateway_port)

    def children(self) -> list[Child]:
        return [c for c in (self.server, self.gateway, self.agent) if c is not None]

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k not in _NOT_INHERITED}
        env.update({"CORRAL_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **extra})
        return env

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    def write_secrets(self, tokens: Tokens) -> None:
        """The tokens the children need, each in a 0600 file they are pointed at."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)
        self.secrets.mkdir(exist_ok=True, mode=0o700)
        self.secrets.chmod(0o700)
        write_secret_file(self.secrets / "admin-token", tokens.admin)
        write_secret_file(self.secrets / "join-token", tokens.join)

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
        self.write_secrets(tokens)
        extra = {
            "CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE": str(self.secrets / "admin-token"),
            "CORRAL_BOOTSTRAP_JOIN_TOKEN_FILE": str(self.secrets / "join-token"),
        }
        if self.gateway_url is not None:
            extra["CORRAL_GATEWAY_PUBLIC_URL"] = self.gateway_url
        self.server = spawn("server", argv, self._env(extra), self.logs / "server.log")

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

    def start_gateway(self, tokens: Tokens) -> None:
        """The gateway, on the API's address, following this server's routes."""
        assert self.gateway_port is not None
        argv = [
            *self.self_argv,
            "gateway",
            "--host",
            self.host,
            "--port",
            str(self.gateway_port),
            "--server",
            self.url,
            "--token-file",
            str(self.secrets / "admin-token"),
        ]
        # It reads the route table, which takes a cluster admin.
        env = self._env({})
        self.gateway = spawn("gateway", argv, env, self.logs / "gateway.log")

    def wait_gateway_healthy(self) -> None:
        import httpx

        if self.gateway is None:
            return
        url = f"{self.gateway_url}/_corral/healthz"
        deadline = time.monotonic() + self.timeouts.server_healthy_s
        with httpx.Client(timeout=1.0) as http:
            while True:
                self._check_alive(self.gateway)
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"the gateway did not answer at {url} within "
                        f"{self.timeouts.server_healthy_s:g} s; see {self.gateway.log}",
                        self.gateway.tail(),
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
            "--join-token-file",
            str(self.secrets / "join-token"),
        ]
        if fake_gpus:
            argv += ["--fake-gpus", fake_gpus]
        env = self._env({})
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
        pids: dict[str, int] = {c.role: c.proc.pid for c in self.children()}
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
        for child in self.children():
            if child.exit_code() is not None:
                return child
        return None

    def stop(self) -> list[tuple[Role, StopResult]]:
        """In STOP_ORDER: the agent stops its replicas while the server still listens."""
        results: list[tuple[Role, StopResult]] = []
        by_role = {c.role: c for c in self.children()}
        for role in STOP_ORDER:
            child = by_role.get(role)
            if child is not None:
                grace = self.timeouts.stop_grace(role)
                results.append((role, stop_pid(child.proc.pid, grace)))
                child.proc.poll()  # let Popen know, or it warns that the child still runs
        return results


def stop_recorded(
    home: Path, st: UpState, timeouts: Timeouts | None = None
) -> list[tuple[str, int, StopResult]]:
    """`corral down`: stop what up.json names, in STOP_ORDER, then forget it."""
    timeouts = timeouts or Timeouts()
    write_up(home, replace(st, stopping=True))
    order: tuple[str, ...] = STOP_ORDER
    results: list[tuple[str, int, StopResult]] = []
    for role in sorted(st.pids, key=lambda r: order.index(r) if r in order else len(order)):
        pid = st.pids[role]
        grace = timeouts.stop_grace(role)
        result: StopResult = stop_pid(pid, grace) if is_ours(pid) else "gone"
        results.append((role, pid, result))
    remove_up(home)
    return results


def stop_pool_nodes(home: Path) -> int:
    """Stop the local pools' agents this control plane started (providers/local.py), which
    would otherwise outlive it, dialling a server that is gone. How many there were."""
    from corral.providers.catalog import Catalog
    from corral.providers.local import LocalProvider

    provider = LocalProvider(home / "local-nodes", Catalog())
    found = [i.provider_id for i in provider.list()]
    provider.terminate(found)
    return len(found)


def _prefer_this_host(nodes: list[NodeView]) -> NodeView:
    host = socket.gethostname().split(".")[0].lower()
    return next((n for n in nodes if n.name.lower().startswith(host)), nodes[0])
