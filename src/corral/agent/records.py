"""What the agent knows of each replica it started, read back from the replica's directory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corral.agent.layout import (
    ASSIGNMENT,
    EXIT,
    OUTPUT,
    PROGRESS,
    SHIM,
    progress_path,
    read_json,
)
from corral.agent.reconcile import RecordState
from corral.agent.sandbox.files import read_small_nofollow
from corral.wire.agent import REASON_MAX, ReplicaAssignment, ReplicaReport

log = logging.getLogger("corral.agent.runner")

# A replica_id becomes a directory name: nothing that could climb out of replicas/.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def safe_replica_id(replica_id: str) -> bool:
    return bool(_SAFE_ID.match(replica_id))


@dataclass
class ReplicaRecord:
    replica_id: str
    path: Path
    assignment: ReplicaAssignment | None = None
    # From shim.json, once the workload runs.
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    shim_pid: int | None = None
    shim_start_time: int | None = None
    started_at: float | None = None
    # From exit.json.
    exited: bool = False
    exit_code: int | None = None
    finished_at: float | None = None
    error: str | None = None
    stopping: bool = False
    # From progress.json, written by the workload through corral.train.report.
    step: int | None = None
    checkpoint_step: int | None = None
    progress_at: float | None = None
    # From the agent's probes (prober.py), in memory only: None until the first verdict.
    ready: bool | None = None
    unready_reason: str | None = None  # the probe's words while ready is False
    # From exit.json: the corral-assigned port another process held (an infrastructure
    # failure, not the script's: runner.py).
    port_conflict: int | None = None
    # Set once shim.json or exit.json has been read: a stop then knows what to signal.
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def state(self) -> RecordState:
        if self.exited:
            return "exited"
        return "stopping" if self.stopping else "running"

    @property
    def log_path(self) -> Path:
        return self.path / OUTPUT

    def log_size(self) -> int:
        try:
            return os.stat(self.log_path).st_size
        except FileNotFoundError:
            return 0

    def report(self) -> ReplicaReport:
        return ReplicaReport(
            replica_id=self.replica_id,
            phase="exited" if self.exited else "running",
            pid=self.pid,
            exit_code=self.exit_code,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            log_bytes=self.log_size() if self.exited else None,
            ready=self._ready(),
            unready_reason=self._unready_reason(),
            port_conflict=self.port_conflict,
            step=self.step,
            checkpoint_step=self.checkpoint_step,
            progress_at=self.progress_at,
        )

    def _unready_reason(self) -> str | None:
        if self.exited or self._ready() is not False or self.unready_reason is None:
            return None
        # The readiness path is the user's: a long one must not make the report invalid.
        reason = self.unready_reason
        return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"

    def _ready(self) -> bool | None:
        if self.assignment is None or self.assignment.probe is None:
            return None
        return False if self.exited else self.ready  # an exited replica serves nothing

    def take_shim(self, shim: dict[str, Any]) -> None:
        self.pid = shim.get("pid")
        self.pgid = shim.get("pgid")
        self.start_time = shim.get("start_time")
        self.shim_pid = shim.get("shim_pid")
        self.shim_start_time = shim.get("shim_start_time")
        self.started_at = shim.get("started_at")
        self.settled.set()

    def take_exit(self, exit_info: dict[str, Any]) -> None:
        self.exited = True
        self.exit_code = exit_info.get("exit_code")
        self.finished_at = exit_info.get("finished_at")
        self.error = exit_info.get("error") or self.error
        conflict = exit_info.get("port_conflict")
        if isinstance(conflict, int) and not isinstance(conflict, bool) and 0 < conflict < 65536:
            self.port_conflict = conflict
        self.settled.set()
        self.done.set()

    def read_shim(self) -> bool:
        """Take shim.json if it is there yet."""
        shim = _read(self.path / SHIM)
        if shim is not None:
            self.take_shim(shim)
        return shim is not None

    def read_exit(self) -> bool:
        """Take exit.json if it is there yet."""
        try:
            exit_info = read_json(self.path / EXIT)
        except (OSError, ValueError) as exc:
            exit_info = {"exit_code": None, "error": f"unreadable {EXIT}: {exc}"}
        if exit_info is not None:
            self.take_exit(exit_info)
        return exit_info is not None

    def read_progress(self) -> bool:
        """Take progress.json if it says something new. True if the step or checkpoint moved.

        The workload writes it, so anything unreadable or ill-typed is ignored, not fatal.
        """
        data = _read_progress(self.path)
        if data is None:
            return False
        step, checkpoint, at = data.get("step"), data.get("checkpoint_step"), data.get("time")
        if not _count(step) or not (checkpoint is None or _count(checkpoint)):
            return False
        if (step, checkpoint) == (self.step, self.checkpoint_step):
            return False
        self.step, self.checkpoint_step = step, checkpoint
        self.progress_at = float(at) if isinstance(at, int | float) else None
        return True


def _read_progress(replica_dir: Path) -> dict[str, Any] | None:
    # Written by the workload, as its own user when confined: never followed if a symlink,
    # never read past a small bound. Records from before status/ existed keep theirs beside.
    for path in (progress_path(replica_dir), replica_dir / PROGRESS):
        try:
            raw = read_small_nofollow(path)
        except OSError:
            return None
        if raw is None:
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):  # [[[[… nested deep enough to overflow
            return None
        return value if isinstance(value, dict) else None
    return None


def _count(value: object) -> bool:
    # Within what the store's integer columns hold: the workload chooses the number.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def load_record(path: Path) -> ReplicaRecord:
    """The record in `path` as it is on disk now (the processes are not looked at)."""
    record = ReplicaRecord(replica_id=path.name, path=path)
    try:
        record.assignment = ReplicaAssignment.model_validate_json((path / ASSIGNMENT).read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ValidationError) as exc:
        log.warning("replica %s: unreadable %s (%s)", path.name, ASSIGNMENT, exc)
    record.read_shim()
    record.read_exit()
    record.read_progress()
    return record


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s)", path, exc)
        return None
