"""Starting, stopping and adopting replicas. Each runs under its own shim (see shim.py).

The directory `<state_dir>/replicas/<replica_id>` is the record: it is created exclusively
before anything is started, and never removed here, so no replica_id is ever started twice,
by this agent or by a later one.

A new Runner (an agent restart) adopts every record without exit.json whose shim is still
alive (pid and process start time match) and waits for it like its own. When a shim is
gone without having written exit.json (it was SIGKILLed, the node rebooted), the exit
status is unknown: the runner kills what is left of the workload's process group and
records `exit_code=None` with an `error` saying so, rather than inventing a code.

A replica given a port (`assignment.port`: its PORT, or rank 0's MASTER_PORT) starts only if
nothing listens there: the scheduler avoids the ports the node reported in use, and this
closes the race between that report and the start. A replica refused, or one that failed
while a process that is not its own, and older than it, held its port, is recorded with
`port_conflict` (an infrastructure failure: placed again, not charged to the script).

A replica with volumes (or a pod's work_volume) gets `<rid>/volumes.json` (0600): the plan
resolved against this node's volume root (volumes.py). The shim creates the directories
(as root, for the workspace's uid), the sandbox's init binds them; nothing is created here,
off the event loop, where a shared filesystem may be slow.

A replica with an uploaded working directory (`assignment.workdir`), an environment, setup
or an image is prepared first (artifacts.prepare, in a task): the tree is fetched into the
node's cache and `<rid>/workdir.json` tells the shim where it is; only then does the shim
start. A failed fetch ends the replica with `exit_code None` (placed again); a stop while it
runs ends it without starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from corral.agent import artifacts, ownership, reconcile, runtimes, volumes
from corral.agent.layout import ASSIGNMENT, EXIT, OUTPUT, is_alive, write_json_atomic
from corral.agent.process import signal_group, wait_gone
from corral.agent.records import ReplicaRecord, load_record, safe_replica_id
from corral.agent.sandbox.config import SANDBOX
from corral.agent.sandbox.policy import Isolation, IsolationUnavailable
from corral.timeouts import within
from corral.wire.agent import ReplicaAssignment

log = logging.getLogger("corral.agent.runner")

SHIM_START_TIMEOUT_S = 30.0  # how long a shim may take to write shim.json
_STARTUP_POLL_S = 0.02
SHIM_VANISHED = "the replica's shim died without recording an exit status (killed, or a reboot)"
NO_RECORD = "this node has no record of the replica (its state was lost): it is not running here"
SHIM_NEVER_STARTED = "the replica's shim never started (the agent stopped while starting it)"
STOPPED_WHILE_FETCHING = "stopped while its working directory was being fetched: never started"
AGENT_STOPPED_WHILE_FETCHING = (
    "the agent stopped while fetching the replica's working directory: never started"
)


def _shim_environment(defaults: dict[str, str] | None = None) -> dict[str, str]:
    # The agent's own settings (CORRAL_JOIN_TOKEN above all) are not the workload's business;
    # the assignment carries every CORRAL_* variable a replica should see.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    for key, value in (defaults or {}).items():
        env.setdefault(key, value)  # the operator's own setting wins; the assignment's too
    return env


class Runner:
    def __init__(
        self,
        state_dir: Path,
        *,
        stop_grace_s: float = 5.0,
        on_change: Callable[[str], None] | None = None,
        isolation: Isolation | None = None,
        volume_root: Path | None = None,
        cache: artifacts.ArtifactCache | None = None,
    ) -> None:
        self.root = state_dir / "replicas"
        self.cache = cache  # the node's cache of working directories
        # Resolved once: the shim and the init walk below it without following links.
        self.volume_root = Path(os.path.realpath(volume_root or state_dir / "volumes"))
        self.isolation = isolation
        self.stop_grace_s = stop_grace_s
        self._on_change = on_change or (lambda _rid: None)
        self._records: dict[str, ReplicaRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Task[None]] = {}
        self._preparing: dict[str, asyncio.Task[None]] = {}
        # Defaults for every workload's environment, set once the node's address is known.
        self.network_env: dict[str, str] = {}

    @property
    def records(self) -> Mapping[str, ReplicaRecord]:
        return self._records

    def load(self) -> None:
        """Read every record and adopt the live ones. Call inside the running event loop."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        adopted = 0
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and safe_replica_id(path.name):
                adopted += self._adopt(load_record(path))
        if self._records:
            log.info(
                "found %d replica records: %d still running (adopted), %d exited",
                len(self._records),
                adopted,
                len(self._records) - adopted,
            )

    def _adopt(self, record: ReplicaRecord) -> bool:
        """Take over a record from disk. True if its replica is still running."""
        self._records[record.replica_id] = record
        if record.exited:
            return False
        if record.shim_pid is not None and not is_alive(record.shim_pid, record.shim_start_time):
            # Settled now, not in a task, so that the first hello already carries the exit.
            if not record.read_exit():
                self._vanished(record, SHIM_VANISHED)
            return False
        if record.assignment is None and record.shim_pid is None:
            self._finish(record, None, SHIM_NEVER_STARTED)
            return False
        self._supervise(record, None)
        return True

    def apply(self, desired: Sequence[ReplicaAssignment]) -> reconcile.Plan:
        """Reconcile with the server's desired set: start the unknown, stop the unwanted."""
        known = {rid: record.state for rid, record in self._records.items()}
        plan = reconcile.plan(known, desired)
        for assignment in plan.start:
            self.start(assignment)
        for replica_id in plan.stop:
            self.stop(replica_id)
        for assignment in plan.unknown:
            self._unknown(assignment)
        return plan

    def _unknown(self, assignment: ReplicaAssignment) -> None:
        """Record, once, that a replica the server believes runs here never ran here."""
        rid = assignment.replica_id
        if not safe_replica_id(rid):
            return
        path = self.root / rid
        try:
            path.mkdir(mode=0o700)
        except OSError:
            return  # a record exists after all (or cannot be made): nothing to report
        record = ReplicaRecord(replica_id=rid, path=path, assignment=assignment)
        self._records[rid] = record
        self._finish(record, None, NO_RECORD)

    def start(self, assignment: ReplicaAssignment) -> bool:
        """Start the replica unless it has a record already. True if it was started."""
        rid = assignment.replica_id
        if rid in self._records:
            return False
        if not safe_replica_id(rid):
            log.error("refusing replica id %r: not usable as a directory name", rid)
            return False
        path = self.root / rid
        try:
            path.mkdir(mode=0o700)  # exclusive: whoever creates it owns the one start
        except FileExistsError:
            log.warning("replica %s already has a record on disk; not starting it again", rid)
            self._adopt(load_record(path))
            return False
        except OSError as exc:
            log.error("replica %s: cannot create %s: %s", rid, path, exc)
            return False
        record = ReplicaRecord(replica_id=rid, path=path, assignment=assignment)
        self._records[rid] = record
        try:
            write_json_atomic(path / ASSIGNMENT, assignment.model_dump(mode="json"))
        except OSError as exc:
            self._finish(record, None, f"cannot record the replica: {exc}")
            return True
        taken = _port_taken(assignment.port)
        if taken is not None:
            self._finish(record, None, taken, port_conflict=assignment.port)
            return True
        if assignment.volumes or assignment.work_volume:
            try:
                self._volume_plan(assignment, path)
            except (volumes.VolumeError, OSError) as exc:
                self._finish(record, None, f"cannot use the replica's volumes: {exc}")
                return True
        env = _shim_environment(self.network_env)
        if self.isolation is not None:
            try:
                self.isolation.config_for(assignment, path).save(path / SANDBOX)
            except (IsolationUnavailable, OSError, ValueError) as exc:
                self._finish(record, None, f"cannot confine the replica: {exc}")
                return True
            env = self.isolation.base_environment(env)
            if assignment.image:
                # Its shim runs the runtime's client, which must find the engine detection
                # found; the container's own environment is built apart (imagerun.py).
                env.update(runtimes.client_environment(os.environ))
        if artifacts.needs_code(assignment):
            task = asyncio.create_task(self._prepare(record, env), name=f"prepare-{rid}")
            self._preparing[rid] = task
            task.add_done_callback(lambda _t: self._preparing.pop(rid, None))
            return True
        self._launch(record, env)
        return True

    async def _prepare(self, record: ReplicaRecord, env: dict[str, str]) -> None:
        assert record.assignment is not None
        try:
            await artifacts.prepare(self.cache, record.assignment, record.path)
        except (artifacts.FetchError, OSError) as exc:
            self._not_prepared(record, f"cannot fetch the working directory: {exc}")
            return
        except Exception as exc:  # our bug: said, and the replica is not left hanging
            log.exception("replica %s: preparing it failed", record.replica_id)
            self._not_prepared(record, f"cannot fetch the working directory: {exc!r}")
            return
        if not record.exited:  # stopped meanwhile: stop() recorded it
            self._launch(record, env)

    def _not_prepared(self, record: ReplicaRecord, error: str) -> None:
        if record.exited:
            return
        with contextlib.suppress(OSError), open(record.path / OUTPUT, "ab") as output:
            output.write(f"corral: {error}\n".encode())  # where the user looks: its log
        self._finish(record, None, error)

    def _launch(self, record: ReplicaRecord, env: dict[str, str]) -> None:
        """Start the replica's shim and watch it."""
        assert record.assignment is not None
        assignment, path, rid = record.assignment, record.path, record.replica_id
        try:
            with open(path / OUTPUT, "ab") as output:
                # Output goes to the replica's log so that even a shim that dies on
                # start-up leaves its reason where the user looks.
                proc = subprocess.Popen(
                    [sys.executable, "-m", "corral.agent.shim", str(path)],
                    cwd=path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    start_new_session=True,
                )
        except OSError as exc:
            self._finish(record, None, f"cannot start the shim: {exc}")
            return
        # Not its command line: users put secrets on it, and the log outlives the replica.
        log.info(
            "starting replica %s (job %s of workspace %s, rank %d, attempt %d)",
            rid,
            assignment.job,
            assignment.workspace,
            assignment.rank,
            assignment.attempt,
        )
        self._supervise(record, proc)

    def _volume_plan(self, assignment: ReplicaAssignment, path: Path) -> None:
        mounts = [(v.name, v.path) for v in assignment.volumes]
        plan = volumes.plan(self.volume_root, assignment.workspace, mounts, assignment.work_volume)
        write_json_atomic(path / volumes.VOLUMES, plan.to_json())

    def mounting(self, workspace: str, name: str) -> list[str]:
        """The replicas not yet exited that use volume (or work_volume) `name` of
        `workspace`."""
        found = []
        for rid, record in self._records.items():
            a = record.assignment
            if record.exited or a is None or a.workspace != workspace:
                continue
            if a.work_volume == name or any(v.name == name for v in a.volumes):
                found.append(rid)
        return found

    async def drop_volume(self, workspace: str, name: str) -> None:
        """Remove a volume's directory on this node (DropVolume). Raises VolumeInUse while
        a replica here uses it (the server refuses to delete a mounted volume, so that is a
        race or a bug: nothing is removed), VolumeError for a name that is not a volume's,
        OSError if the removal fails. The removal runs in a thread: it may be large."""
        volumes.check_workspace(workspace)
        volumes.check_relative(name, "volume")
        users = self.mounting(workspace, name)
        if users:
            raise volumes.VolumeInUse(
                f"volume {name} of workspace {workspace} is used by replica {users[0]} on "
                "this node: not removed"
            )
        await asyncio.to_thread(volumes.drop, self.volume_root, workspace, name)
        log.info("removed volume %s of workspace %s", name, workspace)

    def stop(self, replica_id: str) -> None:
        """Begin stopping a replica: SIGTERM to its process group, SIGKILL after the grace."""
        record = self._records.get(replica_id)
        if record is None or record.exited or replica_id in self._stops:
            return
        record.stopping = True
        preparing = self._preparing.pop(replica_id, None)
        if preparing is not None:
            preparing.cancel()  # its fetch goes on for other replicas (artifacts.py)
            self._finish(record, None, STOPPED_WHILE_FETCHING)
            return
        self._stops[replica_id] = asyncio.create_task(self._stop(record), name=f"stop-{replica_id}")

    async def stop_all(self) -> None:
        """Stop every live replica and return once each has exited."""
        live = [r for r in self._records.values() if not r.exited]
        for record in live:
            self.stop(record.replica_id)
        await asyncio.gather(*(r.done.wait() for r in live))

    def close(self) -> None:
        """Stop watching. The replicas themselves keep running, for the next agent to adopt;
        one still being prepared never started, and is recorded so."""
        for rid, task in list(self._preparing.items()):
            task.cancel()
            self._finish(self._records[rid], None, AGENT_STOPPED_WHILE_FETCHING)
        self._preparing.clear()
        for task in [*self._tasks.values(), *self._stops.values()]:
            task.cancel()
        self._tasks.clear()
        self._stops.clear()

    async def _stop(self, record: ReplicaRecord) -> None:
        await record.settled.wait()
        if record.exited or record.pgid is None:
            return
        log.info("stopping replica %s (SIGTERM)", record.replica_id)
        signal_group(record.pgid, signal.SIGTERM)
        try:
            await within(record.done.wait(), self.stop_grace_s)
        except TimeoutError:
            if not record.exited:
                log.info(
                    "replica %s still running %.1fs after SIGTERM: SIGKILL",
                    record.replica_id,
                    self.stop_grace_s,
                )
                signal_group(record.pgid, signal.SIGKILL)

    def _supervise(self, record: ReplicaRecord, proc: subprocess.Popen[bytes] | None) -> None:
        task = asyncio.create_task(self._watch(record, proc), name=f"watch-{record.replica_id}")
        self._tasks[record.replica_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(record.replica_id, None))

    async def _watch(self, record: ReplicaRecord, proc: subprocess.Popen[bytes] | None) -> None:
        if record.shim_pid is None and not await self._await_shim(record, proc):
            return
        assert record.shim_pid is not None
        await wait_gone(record.shim_pid, record.shim_start_time)
        if proc is not None:
            proc.wait()  # our child: reap it (it has exited, so this does not block)
        if record.read_exit():
            self._exited(record)
        else:
            self._vanished(record, SHIM_VANISHED)

    async def _await_shim(
        self, record: ReplicaRecord, proc: subprocess.Popen[bytes] | None
    ) -> bool:
        """Wait for the shim to report the workload started. False if it ended instead."""
        deadline = _mtime(record.path / ASSIGNMENT) + SHIM_START_TIMEOUT_S
        while True:
            # exit.json first: a workload that could not start has one and no shim.json;
            # one that ran and ended quickly has both (shim.json written first).
            if record.read_exit():
                record.read_shim()
                if proc is not None:
                    proc.wait()
                self._exited(record)
                return False
            if record.read_shim():
                log.info("replica %s running, pid %s", record.replica_id, record.pid)
                self._on_change(record.replica_id)
                return True
            if proc is not None and proc.poll() is not None:
                if not record.read_exit():
                    self._vanished(record, f"the shim exited with status {proc.returncode}")
                else:
                    self._exited(record)
                return False
            if proc is None and time.time() > deadline:
                self._finish(record, None, SHIM_NEVER_STARTED)
                return False
            await asyncio.sleep(_STARTUP_POLL_S)

    def _vanished(self, record: ReplicaRecord, why: str) -> None:
        if record.pgid is not None and is_alive(record.pid, record.start_time):
            # Nobody would ever wait for this workload again: end it now.
            signal_group(record.pgid, signal.SIGKILL)
        log.warning("replica %s: %s", record.replica_id, why)
        self._finish(record, None, why)

    def _finish(
        self,
        record: ReplicaRecord,
        exit_code: int | None,
        error: str,
        *,
        port_conflict: int | None = None,
    ) -> None:
        """Record an exit the shim could not write, so that it is final for later agents."""
        info: dict[str, object] = {
            "exit_code": exit_code,
            "finished_at": time.time(),
            "error": error,
        }
        if port_conflict is not None:
            info["port_conflict"] = port_conflict
        try:
            write_json_atomic(record.path / EXIT, info)
        except OSError as exc:
            log.error("replica %s: cannot write %s: %s", record.replica_id, EXIT, exc)
        record.take_exit(info)
        self._exited(record)

    def _exited(self, record: ReplicaRecord) -> None:
        self._blame_port(record)
        if record.error:
            log.info(
                "replica %s exited (code %s): %s", record.replica_id, record.exit_code, record.error
            )
        else:
            log.info("replica %s exited with code %s", record.replica_id, record.exit_code)
        self._stops.pop(record.replica_id, None)
        self._on_change(record.replica_id)

    def _blame_port(self, record: ReplicaRecord) -> None:
        """A replica that failed by itself while an older process that is not its own held
        its port could not listen there: record that, in exit.json too (it is final)."""
        port = record.assignment.port if record.assignment is not None else None
        if (
            port is None
            or record.port_conflict is not None
            or record.stopping
            or record.exit_code in (None, 0)
            or record.start_time is None
        ):
            return
        # Start times are in clock ticks (10 ms): a holder started in the replica's own
        # tick is not shown to be older, and the message below claims exactly that.
        older = [
            h
            for h in ownership.held_by_others(port, None, record.pgid)
            if h.start_time is not None and h.start_time < record.start_time
        ]
        if not older:
            return
        record.port_conflict = port
        # The holder may be another workspace's: named in the log, for the operator only.
        log.info("replica %s: port %d held by %s", record.replica_id, port, older[0].who())
        record.error = (
            f"exited with code {record.exit_code} while port {port}, which corral gave it, was "
            "held by another process since before it started: it could not listen there (not "
            "an error in the script)"
        )
        try:
            info = {
                "exit_code": record.exit_code,
                "finished_at": record.finished_at,
                "error": record.error,
                "port_conflict": port,
            }
            write_json_atomic(record.path / EXIT, info)
        except OSError as exc:
            log.error("replica %s: cannot write %s: %s", record.replica_id, EXIT, exc)


def _port_taken(port: int | None) -> str | None:
    """Why the replica cannot start on `port` (something listens there), or None."""
    if port is None:
        return None
    holders = ownership.held_by_others(port, None, None)
    if not holders:
        return None
    log.info("port %d is held by %s: replica not started", port, holders[0].who())
    return (
        f"port {port}, which corral gave it, is held by another process on this node: not "
        "started (placed again on a free port)"
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
