"""Whether the process on a replica's port is that replica: for its probes, its start, its exit.

A probe of 127.0.0.1:port is answered by whoever listens there, and nothing in an HTTP
answer says who that is. A replica counts as ready only when every listener that could
take the probe's connection (one on 127.0.0.1, or on a wildcard address) is a socket held
by one of the replica's own processes (procs.replica_pids). Anything else listening there
makes it unready: "port 29500 is held by another process, not this replica". The replica's
workspace reads that reason, and the other process may be another workspace's: which one
it is (pid, name) goes to the agent's log, for the node's operator, not into the reason.

The answers are kept per socket inode, which the kernel never reuses while the socket
lives, so a replica's probes look at /proc/<pid>/fd once per new listener, not per probe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral.agent import ports, procs
from corral.agent.ports import Listener

log = logging.getLogger("corral.agent.ownership")


@dataclass(frozen=True)
class Holder:
    """A process outside the replica that holds a listening socket on its port."""

    port: int
    uid: int
    pid: int | None = None  # None: the agent may not read the holder's /proc entries
    name: str | None = None
    start_time: int | None = None

    def who(self) -> str:
        if self.pid is None:
            return f"uid {self.uid}"
        return f"pid {self.pid}, {self.name}" if self.name else f"pid {self.pid}"


def holding(port: int, listener: Listener, table: dict[int, procs.Proc], pid: int | None) -> Holder:
    proc = table.get(pid) if pid is not None else None
    if proc is None:
        return Holder(port, listener.uid)
    return Holder(port, listener.uid, proc.pid, proc.name, proc.start_time)


def held_by_others(port: int, shim_pid: int | None, pgid: int | None) -> list[Holder]:
    """The processes outside the replica holding listeners on `port` (any address); none
    where the node's sockets cannot be read (not Linux)."""
    try:
        found = ports.on_port(port)
    except OSError:
        return []
    if not found:
        return []
    table = procs.table()
    mine = procs.replica_pids(table, shim_pid, pgid)
    own = set().union(*(procs.socket_inodes(p) for p in mine)) if mine else set()
    foreign = [x for x in found if x.inode not in own]
    if not foreign:
        return []
    where = procs.holders({x.inode for x in foreign}, (p for p in table if p not in mine))
    return [holding(port, x, table, where.get(x.inode)) for x in foreign]


class Ownership:
    """One replica's listeners, judged once per socket."""

    def __init__(self) -> None:
        self._known: dict[int, str | None] = {}  # inode -> None (the replica's) or why not

    def check(self, port: int, shim_pid: int | None, pgid: int | None) -> str | None:
        """Why a probe of 127.0.0.1:port may have reached another process than the replica
        (naming it), or None if no listener there is another's. Reads /proc: call it off
        the event loop. Where the node's sockets cannot be read (not Linux), the answer is
        trusted as it was."""
        try:
            candidates = [x for x in ports.on_port(port) if x.answers_loopback]
        except OSError:
            return None
        if not candidates:
            return None  # closed since it answered: the next probe tells
        live = {x.inode for x in candidates}
        self._known = {i: v for i, v in self._known.items() if i in live}
        unknown = [x for x in candidates if x.inode not in self._known]
        if unknown:
            table = procs.table()
            mine = procs.replica_pids(table, shim_pid, pgid)
            own = set().union(*(procs.socket_inodes(p) for p in mine)) if mine else set()
            others = [x for x in unknown if x.inode not in own]
            where = (
                procs.holders({x.inode for x in others}, (p for p in table if p not in mine))
                if others
                else {}
            )
            for x in unknown:
                if x.inode in own:
                    self._known[x.inode] = None
                else:
                    holder = holding(port, x, table, where.get(x.inode))
                    log.info("port %d is held by %s, not the replica probed", port, holder.who())
                    self._known[x.inode] = (
                        f"port {port} is held by another process, not this replica"
                    )
        return next((why for x in candidates if (why := self._known[x.inode]) is not None), None)
