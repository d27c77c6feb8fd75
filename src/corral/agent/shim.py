"""The per-replica shim: `python -m corral.agent.shim <replica_dir>`. Standard library only.

Like containerd-shim or conmon, it sits between the agent and one workload so that the
workload outlives the agent: the agent may restart (or crash) and a new agent adopts the
shim from `shim.json`. The shim

1. prepares the working directory and writes `assignment.files` into it,
2. runs `assignment.argv` in its own process group, stdout and stderr appended to output.log,
   with CORRAL_PROGRESS_FILE naming progress.json in the replica's directory,
3. records pids and start times in shim.json,
4. waits, then kills whatever is left of the workload's process group (like a container
   whose init exits) and writes exit.json: exit_code (signal N is 128+N), finished_at and,
   when the workload could not even start, an `error` (exit code 127: not found, 126: any
   other reason it could not be started).

SIGTERM, SIGINT and SIGHUP sent to the shim are passed on to the workload's process group,
so that whoever kills the shim still gets an exit.json.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any, BinaryIO

from corral.agent.layout import (
    ASSIGNMENT,
    EXIT,
    OUTPUT,
    PROGRESS,
    PROGRESS_FILE_ENV,
    SHIM,
    WORK,
    process_start_time,
    read_json,
    shell_exit_code,
    write_json_atomic,
)

NOT_FOUND = 127
CANNOT_RUN = 126


def run(replica_dir: Path) -> int:
    if (replica_dir / EXIT).exists():
        return 0  # already finished: a replica runs once
    with open(replica_dir / OUTPUT, "ab", buffering=0) as log:
        try:
            assignment = read_json(replica_dir / ASSIGNMENT)
            if assignment is None:
                raise ValueError(f"{ASSIGNMENT} is missing")
            argv, cwd, env = _prepare(replica_dir, assignment)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _cannot_start(replica_dir, log, CANNOT_RUN, f"cannot prepare the replica: {exc}")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,
            )
        except FileNotFoundError as exc:
            message = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            return _cannot_start(replica_dir, log, NOT_FOUND, message)
        except OSError as exc:
            message = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            return _cannot_start(replica_dir, log, CANNOT_RUN, message)
    shim_pid = os.getpid()
    write_json_atomic(
        replica_dir / SHIM,
        {
            "shim_pid": shim_pid,
            "shim_start_time": process_start_time(shim_pid),
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_time": process_start_time(proc.pid),
            "started_at": time.time(),
        },
    )
    _forward_signals(proc.pid)
    returncode = proc.wait()
    _kill_group(proc.pid)
    write_json_atomic(
        replica_dir / EXIT, {"exit_code": shell_exit_code(returncode), "finished_at": time.time()}
    )
    return 0


def _prepare(
    replica_dir: Path, assignment: dict[str, Any]
) -> tuple[list[str], Path, dict[str, str]]:
    argv = [str(arg) for arg in assignment["argv"]]
    if not argv:
        raise ValueError("argv is empty")
    cwd = Path(assignment.get("working_dir") or replica_dir / WORK)
    cwd.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = assignment.get("files") or {}
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"file {name!r} must be a relative path inside the working dir")
        target = cwd / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        if content.startswith("#!"):
            target.chmod(0o755)  # a script shipped with its shebang is meant to be run
    env = dict(os.environ)
    # The Python that runs corral here: `corral.serve` endpoints start with it.
    env["CORRAL_PYTHON"] = sys.executable
    env.update({str(k): str(v) for k, v in (assignment.get("env") or {}).items()})
    # Set last: the agent reads this very file, so an assignment cannot point it elsewhere.
    env[PROGRESS_FILE_ENV] = os.path.abspath(replica_dir / PROGRESS)
    return argv, cwd, env


def _cannot_start(replica_dir: Path, log: BinaryIO, code: int, message: str) -> int:
    log.write(f"corral: {message}\n".encode())
    write_json_atomic(
        replica_dir / EXIT, {"exit_code": code, "finished_at": time.time(), "error": message}
    )
    return 0


def _forward_signals(pgid: int) -> None:
    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal_group(pgid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)


def _kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty
        os.killpg(pgid, signum)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m corral.agent.shim REPLICA_DIR", file=sys.stderr)
        return 2
    return run(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
