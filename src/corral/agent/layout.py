"""One replica's record on disk, shared by the agent and the shim. Standard library only.

```
<state_dir>/replicas/<replica_id>/
    assignment.json  written by the agent before the shim starts; its directory existing is
                     what makes a replica_id "known" (never started twice)
    shim.json        written by the shim once the workload runs: pids and process start times
    output.log       the workload's stdout and stderr (and the shim's own complaints)
    exit.json        written once, when the workload is gone: exit_code, finished_at, error
    sandbox.json     written by the agent when the replica is confined (sandbox/config.py)
    workdir.json     written by the agent for a replica with code to bring (workdir.py):
                     the cached tree, the link store, the wheel index
    container.env    an image replica's environment for its runtime (0600; imagerun.py)
    status/          the workload's own directory (its user's, when confined)
      progress.json  written by the workload (corral.train.report, at $CORRAL_PROGRESS_FILE):
                     step, checkpoint_step, time; read by the agent (never through a symlink)
      error.txt      why the environment or setup failed (envbuild.py): the exit's error
    work/            the default working directory
    tmp/             /tmp in a confined replica's view
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ASSIGNMENT = "assignment.json"
SHIM = "shim.json"
OUTPUT = "output.log"
EXIT = "exit.json"
PROGRESS = "progress.json"
STATUS = "status"
TMP = "tmp"
PROGRESS_FILE_ENV = "CORRAL_PROGRESS_FILE"  # as corral.train reads it
WORK = "work"


def progress_path(replica_dir: Path) -> Path:
    return replica_dir / STATUS / PROGRESS


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Readers see the old file or the whole new one, never half (and it survives a crash)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's object, or None if there is no such file. Raises ValueError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def process_start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None if it is gone or a zombie.

    A pid alone may have been reused by an unrelated process; pid + start time may not.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    return pid is not None and start_time is not None and process_start_time(pid) == start_time


def shell_exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
