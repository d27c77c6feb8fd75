"""Who listens on a loopback port: may a session forward a connection there?

A session's direct-tcpip (`ssh -L`, `ssh -D`, VS Code) may reach only a port that a process
of its own replica listens on. The kernel says who listens (ports.listeners: the socket
inodes), /proc says who holds each inode. Inside a confined replica the session server
sees the replica's PID namespace only, so "a process it can see" is the replica; when
unconfined, the replica's processes are its shim's tree and its workload's process group
(procs.replica_pids), plus the session's own children.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from corral.agent import ports, procs

# Destinations a session may name, and the addresses each one means.
LOOPBACK_NAMES: dict[str, tuple[str, ...]] = {
    "127.0.0.1": ("127.0.0.1",),
    "::1": ("::1",),
    "localhost": ("127.0.0.1", "::1"),
}
# Listening addresses that take a connection to each loopback address.
_ANSWERING = {
    "127.0.0.1": frozenset({"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"}),
    "::1": frozenset({"::1", "::"}),
}


@dataclass(frozen=True)
class Scope:
    """Whose listeners a session may reach."""

    confined: bool  # in the replica's PID namespace: every process it can see but itself
    shim_pid: int | None = None  # unconfined: the replica's shim and workload group
    pgid: int | None = None


def allowed_pids(scope: Scope, table: dict[int, procs.Proc], me: int) -> set[int]:
    """The processes whose listeners a session may reach. Pure but for `table`."""
    if scope.confined:
        return set(table) - {me}
    mine = procs.replica_pids(table, scope.shim_pid, scope.pgid) if scope.shim_pid else set()
    # The session's own children (a server started from its shell), never itself: in the
    # unit tests it shares a process with the test.
    mine |= procs.replica_pids(table, me, None) - {me}
    return mine


def target(host: str, port: int, scope: Scope) -> tuple[str | None, str]:
    """The address to connect to for `host:port`, or None and why not (one line)."""
    addresses = LOOPBACK_NAMES.get(host.lower().rstrip("."))
    if addresses is None:
        return None, f"{host}: only 127.0.0.1, ::1 or localhost can be reached from a session"
    if not 0 < port < 65536:
        return None, f"port {port}: expected 1-65535"
    try:
        found = ports.on_port(port)
    except OSError as exc:
        return None, f"cannot tell who listens on port {port} ({exc})"
    table = procs.table()
    allowed = allowed_pids(scope, table, os.getpid())
    own: set[int] = set()
    for pid in allowed:
        own |= procs.socket_inodes(pid)
    for address in addresses:
        answering = [x for x in found if x.address in _ANSWERING[address]]
        if not answering:
            continue
        # Every listener that could take the connection must be the replica's: with
        # SO_REUSEPORT a foreign one could share the port.
        if all(x.inode in own for x in answering):
            return address, ""
        return None, f"port {port} on {address} is not held by a process of this replica"
    return None, f"nothing of this replica listens on {host} port {port}"
