"""`python -I -m corral.agent.sessions.enter`: put a session server inside its replica.

Started by the launcher (launch.py), as the agent's user (root on a confining node). Its
configuration, with the session's ticket and the workspace's SSH host key, comes on stdin
and nowhere else: never argv, never the environment, both of which /proc shows. -I keeps
PYTHONPATH and the like away from code that runs as root.

For a confined replica it enters the mount, IPC and PID namespaces of the replica's init
(PID 1 of its namespace), forks (a PID namespace applies to children only), and the child
drops to the workspace's uid/gid (no supplementary groups, PR_SET_NO_NEW_PRIVS) before it
serves. A changed uid also leaves the child non-dumpable: the replica's own processes, of
that uid, cannot read its memory or /proc/<pid>/environ. This process stays outside,
passes TERM/HUP/INT on, and exits with the child's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from types import FrameType

from corral.agent.layout import process_start_time
from corral.agent.sandbox import linux
from corral.agent.sessions.config import SessionConfig
from corral.agent.sessions.server import main

PR_SET_CHILD_SUBREAPER = 36
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_NAMESPACES = (("ipc", linux.CLONE_NEWIPC), ("mnt", linux.CLONE_NEWNS), ("pid", linux.CLONE_NEWPID))

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def setns(fd: int, kind: int) -> None:
    if _libc.setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def read_config() -> SessionConfig:
    chunks = []
    size = 0
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            raise ValueError("session config: too large")
    # Read once, then gone: nothing started later can read it from this pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return SessionConfig.from_json(b"".join(chunks))


def enter_namespaces(config: SessionConfig) -> None:
    """Join the replica init's namespaces (this process: mount, IPC; its children: PID)."""
    pid, started = config.init_pid, config.init_start_time
    if pid is None or started is None:
        raise ValueError("session config: a confined session needs init_pid and init_start_time")
    fds = [
        (os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind)
        for name, kind in _NAMESPACES
    ]
    try:
        # Opened, then checked: the pid was the replica's init all along, not a reused one.
        if process_start_time(pid) != started:
            raise ProcessLookupError(f"the replica's init (pid {pid}) is gone")
        for fd, kind in fds:
            setns(fd, kind)
    finally:
        for fd, _ in fds:
            os.close(fd)


def become(config: SessionConfig) -> None:
    if config.uid is None or config.gid is None:
        raise ValueError("session config: a confined session needs uid and gid")
    os.setgroups([])
    os.setgid(config.gid)
    os.setuid(config.uid)
    linux.no_new_privileges()
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError("still root after setuid")


def child(config: SessionConfig) -> int:
    if config.confined:
        become(config)
    # Set after the uid change, which clears it: the session ends with this process.
    linux.die_with_parent(signal.SIGTERM)
    # Orphans of the session's processes stay below it, to be ended with the session.
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    os.umask(0o022)
    # The workspace's uid has no passwd entry: asyncssh (getpass) asks the environment
    # who the user is and where home is, so give it the replica's answers.
    for name in ("USER", "LOGNAME", "HOME"):
        if name in config.env:
            os.environ[name] = config.env[name]
    try:
        os.chdir(config.cwd)
    except OSError:
        os.chdir("/")
    return main(config)


def run() -> int:
    try:
        config = read_config()
        if config.confined:
            enter_namespaces(config)
    except (OSError, ValueError, TypeError) as exc:
        print(f"cannot start the session: {exc}", file=sys.stderr)
        return 1
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(config)
        except (OSError, ValueError) as exc:
            print(f"cannot start the session: {exc}", file=sys.stderr)
        except BaseException:  # our bug: say what it was (os._exit below would hide it)
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(run())
