"""Whose is a socket: the processes of a replica, and the holders of socket inodes. Linux.

A replica's processes are its shim's descendants (a confined replica's PID namespace
included, seen by their host pids) and whatever is left in its workload's process group
(a daemon that double-forked out of the tree). Socket inodes come from /proc/<pid>/fd,
which the agent can read for its own user's processes, or for all of them as root: a
process it cannot read is never claimed for a replica, and is named as well as it can be.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    name: str
    start_time: int  # clock ticks since boot, as layout.process_start_time


def table() -> dict[int, Proc]:
    """Every process this agent can see, by pid."""
    procs: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := stat(int(entry))) is not None:
            procs[proc.pid] = proc
    return procs


def stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: split after its last ')'.
    name = text[text.find("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), name, int(fields[19]))
    except (IndexError, ValueError):
        return None


def replica_pids(procs: Mapping[int, Proc], shim_pid: int | None, pgid: int | None) -> set[int]:
    """The shim's descendants and the members of the workload's process group. Pure."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    mine: set[int] = set()
    todo = [shim_pid] if shim_pid is not None and shim_pid in procs else []
    while todo:
        pid = todo.pop()
        if pid not in mine:
            mine.add(pid)
            todo.extend(children.get(pid, ()))
    if pgid is not None and pgid > 1:
        mine.update(p.pid for p in procs.values() if p.pgid == pgid)
    return mine


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets `pid` holds open (empty if it cannot be read)."""
    found: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def holders(inodes: Iterable[int], pids: Iterable[int]) -> dict[int, int]:
    """Inode -> the first of `pids` that holds it open, for the inodes found."""
    wanted = set(inodes)
    found: dict[int, int] = {}
    for pid in pids:
        if not wanted:
            break
        for inode in socket_inodes(pid) & wanted:
            found[inode] = pid
            wanted.discard(inode)
    return found
