"""Child processes: started with a log file, found again by pid, stopped with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["server", "gateway", "agent"]
StopResult = Literal["stopped", "killed", "gone"]


def is_ours(pid: int) -> bool:
    """Alive, not a zombie, and still a corral process (not a pid reused since)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return any("corral" in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_pid(pid: int, grace_s: float) -> StopResult:
    """SIGTERM, wait up to `grace_s`, then SIGKILL the process's whole group."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(grace_s)
        return "stopped"
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.TimeoutExpired:
        pass
    _kill_group(pid)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        proc.wait(5.0)
    return "killed"


def _kill_group(pid: int) -> None:
    try:
        group = os.getpgid(pid)
        # Each child leads a session of its own; killing the group also takes whatever it
        # started that is still hanging on. Never our own group.
        if group == pid and group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Child:
    role: Role
    proc: subprocess.Popen[bytes]
    log: Path
    log_start: int  # size of the log before this run: its tail is this run's output
    started_at: float

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int = 20) -> list[str]:
        return log_tail(self.log, self.log_start, lines)


def log_tail(path: Path, start: int = 0, lines: int = 20) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def spawn(role: Role, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
    # Logs hold command lines and errors with other workspaces' names: their user's only.
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.parent.chmod(0o700)
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    log.chmod(0o600)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with log.open("ab") as out:
        start = out.tell()
        out.write(f"--- corral up: starting the {role} at {stamp} ---\n".encode())
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    return Child(role, proc, log, start, time.time())
