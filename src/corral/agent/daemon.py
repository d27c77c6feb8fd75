"""The agent's life: adopt replicas, register if need be, stay connected, shut down.

```
 start ── runner.load() (adopt live replicas, settle exits that happened while away)
   │        prober.watch(each): probe serving replicas again, from scratch
   │
   ▼
 node.json for this server? ──no──► register with the join token ──► save node.json
   │ yes                                 ▲ (401: exit "join token rejected by SERVER")
   ▼                                     │
 dial /v1/agent/connect ──401/403───────┘ (only with a join token; else exit)
   │        │ unreachable: retry, 0.2 s doubling to 5 s
   ▼
 Session: hello → welcome → heartbeats, desired → runner, reports and logs → server
   │ connection lost: replicas keep running; dial again
   ▼
 SIGTERM/SIGINT: close and exit 0, replicas untouched (or stopped and reported first,
 with stop_replicas_on_exit)
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess

from websockets.exceptions import ConnectionClosed

from corral.agent import inventory, lifeline, runtimes
from corral.agent.artifacts import ArtifactCache
from corral.agent.channel import ChannelClosed, Session, dial
from corral.agent.config import AgentConfig
from corral.agent.errors import FatalError, NodeTokenRejected, RetryLater
from corral.agent.health import HealthMonitor
from corral.agent.identity import (
    NodeIdentity,
    load_identity,
    register,
    save_identity,
    saved_node_token,
)
from corral.agent.interruption import InterruptionWatcher, Notice
from corral.agent.prober import Prober
from corral.agent.runner import Runner
from corral.agent.sandbox import policy as sandbox_policy
from corral.agent.sessions.launch import Sessions
from corral.wire.agent import Inventory, RegisterRequest

log = logging.getLogger("corral.agent")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0
DRAIN_TIMEOUT_S = 10.0


class Backoff:
    def __init__(self, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.changes: asyncio.Queue[str] = asyncio.Queue()
        self.runner = Runner(
            config.state_dir,
            stop_grace_s=config.stop_grace_s,
            on_change=self._changed,
            volume_root=config.volumes(),
            cache=ArtifactCache(
                config.state_dir / "artifacts",
                config.server,
                lambda: _node_token(config),
            ),
        )
        # Sessions into replicas (dev pods, `corral job ssh`): each has its own connection
        # to the server, and outlives a reconnection of the channel.
        self.sessions = Sessions(self.runner, config.server)
        # Probes outlive connections, like the replicas: readiness is known while away.
        self.prober = Prober(on_change=self.changes.put_nowait)
        self.session: Session | None = None
        self._stop = asyncio.Event()
        self._inventory: Inventory | None = None
        self.health: HealthMonitor | None = None
        self._lifeline: subprocess.Popen[bytes] | None = None  # ours to reap when it ends
        self._has_lifeline = False

    def _ensure_lifeline(self) -> None:
        """Start the node's lifeline unless one runs (one that gave up while this agent was
        away is started again), reaping the one this agent started if it ended."""
        if self._lifeline is not None and self._lifeline.poll() is not None:
            self._lifeline = None
        try:
            started = lifeline.ensure(self.config.state_dir)
        except OSError as exc:
            # Without one, a restart of this agent is told from a dead host by silence only.
            log.warning("cannot start the node's lifeline: %s", exc)
            self._has_lifeline = False
            return
        if started is not None:
            self._lifeline = started
        self._has_lifeline = True

    def _changed(self, replica_id: str) -> None:
        """A replica began running or exited: (re)consider its probes, and report it."""
        record = self.runner.records.get(replica_id)
        if record is not None:
            self.prober.watch(record)
        self.changes.put_nowait(replica_id)

    def stop(self) -> None:
        """Ask the agent to shut down (safe to call from a signal handler in the loop)."""
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped (0) or until the server turns the node away for good (1)."""
        try:
            self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # node.json, every replica's assignment (its env) and logs live here.
            self.config.state_dir.chmod(0o700)
            self.runner.load()
        except OSError as exc:
            log.error("cannot use the state directory %s: %s", self.config.state_dir, exc)
            return 1
        try:
            isolation, note = await asyncio.to_thread(
                sandbox_policy.resolve,
                self.config.isolation,
                self.config.state_dir,
                self.config.uid_base,
            )
        except sandbox_policy.IsolationUnavailable as exc:
            log.error("%s", exc)
            return 2
        (log.info if isolation is not None else log.warning)("%s", note)
        self.runner.isolation = isolation
        for record in self.runner.records.values():
            self.prober.watch(record)  # adopted serving replicas: probed again from scratch
        self._ensure_lifeline()
        hostname = socket.gethostname()
        gpus = await asyncio.to_thread(inventory.detect_gpus, self.config.fake_gpus, hostname)
        if gpus.backend == "fake":
            log.warning("%s", gpus.note)
        else:
            log.info("%s", gpus.note)
        # Off the loop: it asks the container runtimes, which may take up to 3 s.
        self._inventory = await asyncio.to_thread(
            inventory.collect, self.config.state_dir, gpus, self.config.labels
        )
        log.info("%s", runtimes.describe(self._inventory.runtimes))
        self.health = HealthMonitor(
            gpus,
            {"state": self.config.state_dir, "workload": self.config.state_dir / "replicas"},
            self.config.state_dir,
            interval_s=self.config.health_interval_s,
            node_name=self.config.name or hostname,
        )
        # Health checks outlive connections, like the replicas and their probes.
        checks = asyncio.create_task(self.health.run(), name="health")
        connected = asyncio.create_task(self._stay_connected(), name="channel")
        stopped = asyncio.create_task(self._stop.wait(), name="stop")
        notices = self._watch_interruptions()
        await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        failure = connected.exception() if connected.done() else None
        try:
            if self.config.stop_replicas_on_exit:
                await self._stop_replicas()
        finally:
            stopped.cancel()
            connected.cancel()
            checks.cancel()
            if notices is not None:
                notices.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connected
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await checks
            await self.sessions.close()
            self.prober.close()
            self.runner.close()
        if failure is not None and not isinstance(failure, FatalError):
            raise failure  # our bug: let it show
        if failure is not None:
            log.error("%s", failure)
            return 1
        log.info("agent stopped")
        return 0

    def _watch_interruptions(self) -> asyncio.Task[Notice] | None:
        """With --interruption-notices: tell the control plane when the cloud is about to
        take this machine back (agent/interruption.py), so it drains the node in time."""
        if self.config.interruption_notices is None:
            return None
        watcher = InterruptionWatcher(
            self.config.server,
            lambda: _node_token(self.config),
            base_url=self.config.imds_url,
            poll_s=self.config.interruption_poll_s,
        )
        return asyncio.create_task(watcher.run(), name="interruptions")

    async def _stop_replicas(self) -> None:
        live = [r for r in self.runner.records.values() if not r.exited]
        if not live:
            return
        log.info("stopping %d replicas before exiting", len(live))
        await self.runner.stop_all()
        if self.session is not None:
            # Let the session ship their last logs and exit reports before closing.
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await self.changes.join()
            except TimeoutError:
                log.warning("could not report every stopped replica before exiting")

    async def _stay_connected(self) -> None:
        config = self.config
        backoff = Backoff()
        identity = load_identity(config.state_dir, config.server)
        while True:
            if identity is None:
                identity = await self._register()
            try:
                ws = await dial(config.server, identity.node_token)
            except NodeTokenRejected as exc:
                if not config.join_token:
                    raise FatalError(
                        f"node token rejected by {config.server}; "
                        "run the agent with --join-token to register again"
                    ) from exc
                delay = backoff.next()
                log.warning("%s; registering again with the join token in %.1fs", exc, delay)
                identity = None
                await asyncio.sleep(delay)
                continue
            except RetryLater as exc:
                delay = backoff.next()
                log.warning("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            assert self._inventory is not None
            self._ensure_lifeline()
            session = Session(
                ws,
                self.runner,
                self.changes,
                self._inventory,
                config.address,
                progress_poll_s=config.progress_poll_s,
                ports_poll_s=config.ports_poll_s,
                health=self.health,
                lifeline=self._has_lifeline,
                sessions=self.sessions,
            )
            self.session = session
            try:
                await session.run()
            except (ChannelClosed, ConnectionClosed, OSError) as exc:
                if session.welcome is not None:
                    backoff.reset()  # it worked for a while: start again at the short delay
                delay = backoff.next()
                log.warning(
                    "connection to %s lost (%s); reconnecting in %.1fs",
                    config.server,
                    _why(exc),
                    delay,
                )
                await asyncio.sleep(delay)
            finally:
                self.session = None
                await ws.close()

    async def _register(self) -> NodeIdentity:
        config = self.config
        if not config.join_token:
            raise FatalError(
                f"this node has no identity for {config.server} in "
                f"{config.state_dir / 'node.json'}; give a join token to register it"
            )
        assert self._inventory is not None
        request = RegisterRequest(
            join_token=config.join_token,
            name=config.name or self._inventory.hostname,
            inventory=self._inventory,
            node_token=saved_node_token(config.state_dir),
        )
        backoff = Backoff()
        while True:
            try:
                identity = await register(config.server, request)
            except RetryLater as exc:
                delay = backoff.next()
                log.warning("%s; retrying registration in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            save_identity(config.state_dir, identity)
            log.info(
                "registered with %s as node %s (%s)", config.server, request.name, identity.node_id
            )
            return identity


def _node_token(config: AgentConfig) -> str | None:
    """The node token for the artifact cache's requests: read when needed, so that a token
    got by registering again is the one used."""
    identity = load_identity(config.state_dir, config.server)
    return identity.node_token if identity is not None else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is not None:
            return f"closed by the server, code {exc.rcvd.code} {exc.rcvd.reason}".strip()
        return "connection dropped"
    return str(exc) or type(exc).__name__
