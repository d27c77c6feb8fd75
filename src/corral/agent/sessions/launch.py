"""The agent's side of sessions: start a session server in a replica, reap it, end it.

`Sessions.open` finds the replica, builds the session's configuration (the workload's own
environment and working directory, and for a confined replica its init to enter and the
workspace's uid) and starts `python -I -m corral.agent.sessions.enter` with that on stdin.
A session server's stderr goes to the agent's log (a bounded number of lines), never to the
replica's output. When the replica stops, its sessions end; `close` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.envbuild import ENVIRONMENT_FILE
from corral.agent.layout import ASSIGNMENT, WORK, process_start_time, progress_path, read_json
from corral.agent.records import ReplicaRecord
from corral.agent.runner import Runner
from corral.agent.sandbox.config import SANDBOX, SandboxConfig
from corral.agent.sandbox.files import read_small_nofollow
from corral.agent.sandbox.policy import Isolation
from corral.agent.sessions.config import SessionConfig, relay_url
from corral.agent.shim import load_plan, workload_environment
from corral.wire.sessions import OpenSession

log = logging.getLogger("corral.agent.sessions")

STOP_GRACE_S = 3.0
MAX_LOG_LINES = 50  # per session: a session server logs problems, not chatter
MAX_LOG_LINE = 500
MAX_ENVIRON_BYTES = 1 << 20
# Each session is a process on the node: one replica's user cannot fill the node with them
# (the server bounds sessions per workspace too).
MAX_PER_REPLICA = 16


@dataclass
class _Running:
    session_id: str
    replica_id: str
    proc: asyncio.subprocess.Process
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Sessions:
    def __init__(self, runner: Runner, server: str) -> None:
        self._runner = runner
        self._server = server
        self._running: dict[str, _Running] = {}

    def count(self) -> int:
        return len(self._running)

    async def open(self, message: OpenSession) -> str | None:
        """Start the session server; None if started, else one line saying why not."""
        record = self._runner.records.get(message.replica_id)
        if record is None or record.exited or record.stopping or record.pid is None:
            return f"replica {message.replica_id} is not running on this node"
        if message.session_id in self._running:
            return f"session {message.session_id} is already open"
        open_here = sum(1 for r in self._running.values() if r.replica_id == message.replica_id)
        if open_here >= MAX_PER_REPLICA:
            return (
                f"replica {message.replica_id} has {MAX_PER_REPLICA} sessions open on this "
                "node; close one first"
            )
        try:
            config = self._config(message, record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("session %s: cannot prepare: %s", message.session_id, exc)
            return f"cannot start a session in replica {message.replica_id}: {exc}"
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "corral.agent.sessions.enter",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                # As a confined replica's init gets it: it runs as root until it drops.
                env=Isolation.base_environment(os.environ),
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot start a session server: {exc}"
        assert proc.stdin is not None
        proc.stdin.write(config.to_json())
        with contextlib.suppress(OSError, ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        running = _Running(message.session_id, message.replica_id, proc)
        self._running[message.session_id] = running
        running.tasks = [
            asyncio.create_task(self._log(running)),
            asyncio.create_task(self._watch(running, record)),
        ]
        log.info(
            "session %s into replica %s opened (%s)",
            message.session_id,
            message.replica_id,
            message.who or "unknown",
        )
        return None

    async def close(self) -> None:
        """The agent is stopping: end every session server."""
        running = list(self._running.values())
        await asyncio.gather(*(self._end(r) for r in running), return_exceptions=True)
        for r in running:
            for task in r.tasks:
                task.cancel()
        self._running.clear()

    def _config(self, message: OpenSession, record: ReplicaRecord) -> SessionConfig:
        assignment = read_json(record.path / ASSIGNMENT)
        if assignment is None:
            raise ValueError(f"{ASSIGNMENT} is missing")
        common: dict[str, Any] = {
            "session_id": message.session_id,
            "ticket": message.ticket,
            "relay_url": relay_url(self._server, message.session_id),
            "authorized_keys": list(message.authorized_keys),
            "host_key": message.host_key,
            "who": message.who,
        }
        sandbox_path = record.path / SANDBOX
        if sandbox_path.exists():
            sandbox = SandboxConfig.load(sandbox_path)
            assert record.pid is not None
            started = record.start_time or process_start_time(record.pid)
            # The init's own environment (root's, the user cannot change it), made into the
            # workload's exactly as the init made it.
            base = _environ(record.pid, started)
            env = workload_environment(record.path, assignment, base)
            env.update(sandbox.user_env())
            _with_environment(record.path, env)
            cwd = _working_dir(record.path, assignment, sandbox.work, env, confined=True)
            return SessionConfig(
                **common,
                env=env,
                cwd=str(cwd),
                confined=True,
                init_pid=record.pid,
                init_start_time=started,
                uid=sandbox.uid,
                gid=sandbox.gid,
            )
        # Unconfined: the workload got its shim's environment, made the same way.
        try:
            base = _environ(record.shim_pid, record.shim_start_time)
        except (OSError, ValueError):
            base = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env = workload_environment(record.path, assignment, base)
        _with_environment(record.path, env)
        cwd = _working_dir(record.path, assignment, record.path / WORK, env, confined=False)
        return SessionConfig(
            **common,
            env=env,
            cwd=str(cwd),
            shim_pid=record.shim_pid,
            pgid=record.pgid,
        )

    async def _log(self, running: _Running) -> None:
        stream = running.proc.stderr
        assert stream is not None
        lines = 0
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: skipped
            if not line:
                return
            lines += 1
            if lines <= MAX_LOG_LINES:
                text = line.decode("utf-8", "replace").rstrip()[:MAX_LOG_LINE]
                log.warning("session %s: %s", running.session_id, text)
            elif lines == MAX_LOG_LINES + 1:
                log.warning("session %s: more lines not logged", running.session_id)

    async def _watch(self, running: _Running, record: ReplicaRecord) -> None:
        exited = asyncio.ensure_future(running.proc.wait())
        stopped = asyncio.ensure_future(record.done.wait())
        try:
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                log.info(
                    "replica %s stopped: ending session %s",
                    running.replica_id,
                    running.session_id,
                )
                await self._end(running)
            elif exited.exception() is not None:
                log.warning("session %s: %r", running.session_id, exited.exception())
        finally:
            stopped.cancel()
            self._running.pop(running.session_id, None)
            log.info("session %s ended (exit %s)", running.session_id, running.proc.returncode)

    async def _end(self, running: _Running) -> None:
        proc = running.proc
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _working_dir(
    replica_dir: Path,
    assignment: dict[str, Any],
    default: str | Path,
    env: dict[str, str],
    *,
    confined: bool,
) -> str | Path:
    """Where the workload runs (its spec's working_dir, a pod's work volume, or its own
    directory), and its volumes' variables added to `env`, as the shim gave them."""
    plan = load_plan(replica_dir)
    if plan is not None:
        env.update(plan.environment(confined))
    work = plan.work_host() if plan is not None else None
    return assignment.get("working_dir") or work or default


def _with_environment(replica_dir: Path, env: dict[str, str]) -> None:
    """A session gets the replica's Python environment (envbuild.py), first on PATH, as its
    command did. The file is the replica user's own: it can only change that user's
    session, and is read without following links, bounded, and checked to be a path."""
    try:
        raw = read_small_nofollow(progress_path(replica_dir).parent / ENVIRONMENT_FILE, 4096)
    except OSError:
        return
    path = raw.decode("utf-8", "replace").strip() if raw else ""
    if not path.startswith("/") or any(c in path for c in "\0\n:") or not os.path.isdir(path):
        return
    env["VIRTUAL_ENV"] = path
    env["PATH"] = os.pathsep.join(p for p in (f"{path}/bin", env.get("PATH", "")) if p)


def _environ(pid: int | None, start_time: int | None) -> dict[str, str]:
    """The environment `pid` started with, if it is still the process that started then."""
    if pid is None:
        raise ValueError("no process to read the environment of")
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read(MAX_ENVIRON_BYTES)
    if start_time is not None and process_start_time(pid) != start_time:
        raise ValueError(f"process {pid} is gone")
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env
