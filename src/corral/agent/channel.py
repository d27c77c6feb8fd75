"""One connection of the agent channel (see corral.wire.agent for the protocol).

A `Session` lives as long as one WebSocket: it says hello, takes the welcome, and then runs
three loops until the connection ends — heartbeats, the server's desired sets (applied to
the runner), and a pump that ships replica reports and log chunks. The pump is the only
sender of both, which is what guarantees a replica's last log chunk goes out before the
report that it exited.

The pump also reads each running replica's progress.json every `progress_poll_s` and sends
a report when its step or checkpoint moved: at most one per replica per poll, however fast
the script steps. The exit report carries the final progress.

Serving replicas' probe verdicts (prober.py) arrive through the same change queue as the
runner's, so a `ready` change is reported at once, after the replica's running report.

The pump also looks at the node's listening TCP ports every `ports_poll_s` and sends them
when they change, and every `PORTS_REFRESH_S` regardless (the scheduler hands out none of
them). A replica that found its port taken has them sent first, so that the scheduler knows
before the replica's failure makes it place the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

import corral
from corral.agent import lifeline
from corral.agent.errors import NodeTokenRejected, RetryLater
from corral.agent.health import FaultRefused, HealthMonitor
from corral.agent.logs import LogTailer
from corral.agent.network import collective_env
from corral.agent.ports import listening_ports
from corral.agent.runner import Runner
from corral.agent.sessions.launch import Sessions
from corral.agent.volumes import VolumeError
from corral.urls import ws_url
from corral.wire.agent import (
    SERVER_MESSAGE,
    Desired,
    Heartbeat,
    Hello,
    Inventory,
    Ports,
    Welcome,
)
from corral.wire.health import CheckNow, InjectFault
from corral.wire.sessions import DropVolume, OpenSession, SessionRefused

log = logging.getLogger("corral.agent.channel")

OPEN_TIMEOUT_S = 10.0
WELCOME_TIMEOUT_S = 30.0
LOG_POLL_S = 0.1
LOG_BUDGET_BYTES = 1024 * 1024  # per replica per poll, so one chatty log cannot starve others
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a desired set carries files; allow large ones
PROGRESS_POLL_S = 1.0
PORTS_POLL_S = 2.0
PORTS_REFRESH_S = 60.0


class ChannelClosed(Exception):
    """The connection ended; the message says how."""


def connect_url(server: str) -> str:
    return ws_url(server, "/v1/agent/connect")


async def dial(server: str, node_token: str) -> ClientConnection:
    """Open the channel. Raises NodeTokenRejected or RetryLater."""
    try:
        return await connect(
            connect_url(server),
            additional_headers={"Authorization": f"Bearer {node_token}"},
            user_agent_header=f"corral-agent/{corral.__version__}",
            open_timeout=OPEN_TIMEOUT_S,
            max_size=MAX_MESSAGE_BYTES,
        )
    except InvalidStatus as exc:
        # 403 too: a server that cannot send an HTTP 401 on a WebSocket closes with 1008,
        # which reaches us as 403.
        if exc.response.status_code in (401, 403):
            raise NodeTokenRejected(f"{server} rejected the node token") from exc
        raise RetryLater(f"{server} answered HTTP {exc.response.status_code}") from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise RetryLater(f"cannot reach {server} ({exc or type(exc).__name__})") from exc


class Session:
    def __init__(
        self,
        ws: ClientConnection,
        runner: Runner,
        changes: asyncio.Queue[str],
        inventory: Inventory,
        address: str | None,
        *,
        progress_poll_s: float = PROGRESS_POLL_S,
        ports_poll_s: float = PORTS_POLL_S,
        health: HealthMonitor | None = None,
        lifeline: bool = False,
        sessions: Sessions | None = None,
    ) -> None:
        self.ws = ws
        self.sessions = sessions
        self._tasks: set[asyncio.Task[None]] = set()
        self.health = health
        self.lifeline = lifeline
        self.progress_poll_s = progress_poll_s
        self.ports_poll_s = ports_poll_s
        self._ports: list[int] | None = None  # as last sent
        self._ports_at = 0.0  # when, monotonic
        self.runner = runner
        self.changes = changes
        self.inventory = inventory
        self.address = address or str(ws.local_address[0])
        runner.network_env = collective_env(self.address)
        self.tailer = LogTailer()
        self.welcome: Welcome | None = None
        # Replicas the server has heard of on this connection (in the hello, or reported
        # since): logs wait for that, so the server sees running, then logs, then exited.
        self._announced: set[str] = set()
        self._parts: dict[int, Desired] = {}

    async def run(self) -> None:
        """Run until the connection ends (ChannelClosed or websockets' ConnectionClosed)."""
        try:
            await self._greet()
            tasks = [
                asyncio.create_task(self._heartbeats(), name="heartbeats"),
                asyncio.create_task(self._receive(), name="receive"),
                asyncio.create_task(self._pump(), name="pump"),
            ]
            if self.health is not None:
                tasks.append(asyncio.create_task(self._health(self.health), name="health"))
            if self.lifeline:
                tasks.append(asyncio.create_task(self._beat(), name="beat"))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.tailer.close()

    async def _greet(self) -> None:
        # The hello carries every replica's current state, so changes queued until now
        # (while disconnected, say) need no report of their own.
        while not self.changes.empty():
            self.changes.get_nowait()
            self.changes.task_done()
        records = self.runner.records.values()
        for known in records:
            known.read_progress()
        self._ports = await _read_ports()
        self._ports_at = time.monotonic()
        hello = Hello(
            inventory=self.inventory,
            address=self.address,
            replicas=[record.report() for record in records],
            ports=self._ports,
            lifeline=self.lifeline,
        )
        await self._send(hello)
        self._announced.update(r.replica_id for r in hello.replicas)
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT_S):
                first = SERVER_MESSAGE.validate_json(await self.ws.recv())
        except TimeoutError as exc:
            raise ChannelClosed(f"no welcome within {WELCOME_TIMEOUT_S:.0f}s") from exc
        except ValidationError as exc:
            raise ChannelClosed(f"unreadable first message from the server: {exc}") from exc
        if not isinstance(first, Welcome):
            raise ChannelClosed(f"expected welcome first, got {first.type}")
        self.welcome = first
        for replica_id, offset in first.log_offsets.items():
            record = self.runner.records.get(replica_id)
            if record is not None:
                self.tailer.follow(replica_id, record.log_path, offset)
        running = sum(1 for r in records if not r.exited)
        log.info(
            "connected as node %s (address %s, replicas running: %d)",
            first.node_id,
            self.address,
            running,
        )

    async def _heartbeats(self) -> None:
        assert self.welcome is not None
        interval = max(0.05, self.welcome.heartbeat_interval_s)
        while True:
            await asyncio.sleep(interval)
            await self._send(Heartbeat(sent_at=time.time()))

    async def _receive(self) -> None:
        async for text in self.ws:
            try:
                message = SERVER_MESSAGE.validate_json(text)
            except ValidationError as exc:
                log.warning("ignoring a message from the server we cannot read: %s", exc)
                continue
            if isinstance(message, Desired):
                whole = self._assemble(message)
                if whole is not None:
                    self._apply(whole)
            elif isinstance(message, InjectFault):
                self._inject(message)
            elif isinstance(message, CheckNow) and self.health is not None:
                self.health.check_now()
            elif isinstance(message, OpenSession):
                self._spawn(self._open_session(message))
            elif isinstance(message, DropVolume):
                self._spawn(self._drop_volume(message))
        raise ChannelClosed("the server closed the connection")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the reader (a session's start must not hold up `desired`)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_session(self, message: OpenSession) -> None:
        why = (
            "this agent does not run sessions"
            if self.sessions is None
            else await self.sessions.open(message)
        )
        if why is not None:
            log.info("session %s refused: %s", message.session_id, why)
            with contextlib.suppress(Exception):  # the server times the session out anyway
                await self._send(SessionRefused(session_id=message.session_id, reason=why))

    async def _drop_volume(self, message: DropVolume) -> None:
        try:
            await self.runner.drop_volume(message.workspace, message.name)
        except (VolumeError, OSError) as exc:
            log.warning("volume %s of %s not removed: %s", message.name, message.workspace, exc)

    def _inject(self, fault: InjectFault) -> None:
        if self.health is None:
            return
        try:
            self.health.inject(fault)
        except (FaultRefused, ValueError) as exc:
            log.warning("fault injection refused: %s", exc)
        else:
            log.warning("FAKE fault injected: %s", fault.model_dump(exclude_none=True))

    def _watch_checkpoints(self, desired: Desired) -> None:
        """The checkpoint root replicas write to (a path every node sees) is a disk the
        health checks watch: a full one would fail every checkpoint."""
        if self.health is None:
            return
        for assignment in desired.replicas:
            where = assignment.workspace_checkpoints
            if where and where.startswith("/"):
                root = Path(where).parent
                if self.health.paths.get("checkpoint") != root:
                    # A new dict, not a change in place: a check may be reading it.
                    self.health.paths = {**self.health.paths, "checkpoint": root}
                return

    async def _beat(self) -> None:
        """Connected: keep the node's lifeline quiet (agent/lifeline.py)."""
        state_dir = self.runner.root.parent
        while True:
            await asyncio.to_thread(lifeline.touch, state_dir)
            await asyncio.sleep(lifeline.BEAT_S)

    async def _health(self, monitor: HealthMonitor) -> None:
        """Every health report, from the current one on: the server judges them."""
        seq = 0
        while True:
            seq, report = await monitor.next_report(seq)
            await self._send(report)

    def _assemble(self, message: Desired) -> Desired | None:
        """The whole desired set once every part of one generation is here; a newer
        generation replaces an unfinished older one (the set is level-triggered)."""
        if message.parts == 1:
            self._parts = {}
            return message
        if self._parts and next(iter(self._parts.values())).generation != message.generation:
            self._parts = {}
        self._parts[message.part] = message
        if len(self._parts) < message.parts:
            return None
        replicas = [a for i in sorted(self._parts) for a in self._parts[i].replicas]
        self._parts = {}
        return Desired(replicas=replicas, generation=message.generation)

    def _apply(self, desired: Desired) -> None:
        plan = self.runner.apply(desired.replicas)
        self._watch_checkpoints(desired)
        for assignment in plan.start:
            record = self.runner.records.get(assignment.replica_id)
            if record is not None:
                self.tailer.follow(record.replica_id, record.log_path, 0)
        if plan.start or plan.stop:
            log.info(
                "desired set of %d: starting %d, stopping %d",
                len(desired.replicas),
                len(plan.start),
                len(plan.stop),
            )

    async def _pump(self) -> None:
        next_progress = time.monotonic() + self.progress_poll_s
        next_ports = time.monotonic() + self.ports_poll_s
        while True:
            try:
                async with asyncio.timeout(LOG_POLL_S):
                    replica_id = await self.changes.get()
            except TimeoutError:
                pass
            else:
                try:
                    await self._report(replica_id)
                finally:
                    self.changes.task_done()
            await self._ship_logs()
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + self.progress_poll_s
                await self._ship_progress()
            if time.monotonic() >= next_ports:
                next_ports = time.monotonic() + self.ports_poll_s
                await self._ship_ports(force=False)

    async def _report(self, replica_id: str) -> None:
        record = self.runner.records.get(replica_id)
        if record is None:
            return
        if record.exited:
            while self.tailer.following(replica_id):
                for chunk in self.tailer.read(replica_id, final=True, budget=LOG_BUDGET_BYTES):
                    await self._send(chunk)
        if record.exited and record.port_conflict is not None:
            await self._ship_ports(force=True)
        record.read_progress()
        await self._send(record.report())
        self._announced.add(replica_id)

    async def _ship_ports(self, *, force: bool) -> None:
        ports = await _read_ports()
        if ports is None:
            return
        stale = time.monotonic() - self._ports_at >= PORTS_REFRESH_S
        if ports != self._ports or stale or force:
            await self._send(Ports(ports=ports))
            self._ports = ports
            self._ports_at = time.monotonic()

    async def _ship_progress(self) -> None:
        for replica_id in sorted(self._announced):
            record = self.runner.records.get(replica_id)
            # An exited replica's progress goes with its exit report, after its last logs.
            if record is None or record.exited or not record.read_progress():
                continue
            await self._send(record.report())

    async def _ship_logs(self) -> None:
        for replica_id in self.tailer.replica_ids():
            if replica_id not in self._announced:
                continue
            record = self.runner.records.get(replica_id)
            final = record is None or record.exited
            for chunk in self.tailer.read(replica_id, final=final, budget=LOG_BUDGET_BYTES):
                await self._send(chunk)

    async def _send(self, message: BaseModel) -> None:
        await self.ws.send(message.model_dump_json())


async def _read_ports() -> list[int] | None:
    """The node's listening TCP ports, or None where they cannot be read (not Linux)."""
    try:
        return await asyncio.to_thread(listening_ports)
    except OSError as exc:
        log.warning("cannot read the node's listening ports: %s", exc)
        return None
