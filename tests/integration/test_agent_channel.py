"""The agent against a stand-in control plane on loopback: register, hello, desired, reports,
logs, reconnects and shutdown. The stand-in is a tiny Starlette app the test drives by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from corral.agent.config import AgentConfig
from corral.agent.daemon import Agent
from corral.agent.identity import NodeIdentity, save_identity
from corral.agent.sandbox.modes import IsolationMode
from corral.wire.agent import (
    AGENT_MESSAGE,
    AgentMessage,
    Desired,
    Heartbeat,
    Hello,
    LogChunk,
    Ports,
    RegisterRequest,
    ReplicaAssignment,
    ReplicaReport,
    Welcome,
)
from corral.wire.health import HealthReport

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
JOIN = "crj_join"
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.02; done"


class Conn:
    """One agent connection, as the control plane sees it."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[AgentMessage | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.heartbeats = 0
        self.ports: list[Ports] = []  # the node's listening ports, as reported (not in inbox)
        self.health: list[HealthReport] = []  # health reports (not in inbox either)

    async def next(self, timeout: float = 10.0) -> AgentMessage:
        message = await asyncio.wait_for(self.inbox.get(), timeout)
        if message is None:
            raise AssertionError("the agent closed the connection")
        return message

    async def expect(self, kind: type[M], timeout: float = 10.0) -> M:
        """The next message that is not a heartbeat; it must be a `kind`."""
        message = await self.next(timeout)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    async def send(self, message: BaseModel) -> None:
        await self.ws.send_text(message.model_dump_json())

    async def logs_until_report(self) -> tuple[list[LogChunk], ReplicaReport]:
        chunks: list[LogChunk] = []
        while True:
            message = await self.next()
            if isinstance(message, LogChunk):
                chunks.append(message)
            elif isinstance(message, ReplicaReport):
                return chunks, message


class FakeControlPlane:
    def __init__(self, *, accept_join: bool = True, node_token: str = "crn_good") -> None:
        self.accept_join = accept_join
        self.node_token = node_token
        self.registrations: list[RegisterRequest] = []
        self.rejected_connects = 0
        self.connections: asyncio.Queue[Conn] = asyncio.Queue()
        app = Starlette(
            routes=[
                Route("/v1/agent/register", self._register, methods=["POST"]),
                WebSocketRoute("/v1/agent/connect", self._connect),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.url = ""

    async def _register(self, request: Request) -> Response:
        body = RegisterRequest.model_validate_json(await request.body())
        self.registrations.append(body)
        if not self.accept_join or body.join_token != JOIN:
            return JSONResponse({"error": {"code": "unauthorized", "message": "no"}}, 401)
        return JSONResponse({"node_id": "n-1", "node_token": self.node_token})

    async def _connect(self, ws: WebSocket) -> None:
        if ws.headers.get("authorization") != f"Bearer {self.node_token}":
            self.rejected_connects += 1
            try:
                await ws.send_denial_response(Response(status_code=401))
            except RuntimeError:
                await ws.close(code=1008)
            return
        await ws.accept()
        conn = Conn(ws)
        await self.connections.put(conn)
        try:
            while True:
                message = AGENT_MESSAGE.validate_json(await ws.receive_text())
                if isinstance(message, Heartbeat):
                    conn.heartbeats += 1
                elif isinstance(message, Ports):
                    conn.ports.append(message)
                elif isinstance(message, HealthReport):
                    conn.health.append(message)
                else:
                    await conn.inbox.put(message)
        except WebSocketDisconnect:
            pass
        finally:
            await conn.inbox.put(None)
            conn.closed.set()

    async def next_connection(self, timeout: float = 10.0) -> Conn:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        await until("the stand-in control plane up", lambda: self.server.started)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self._task


@contextlib.asynccontextmanager
async def control_plane(**options: Any) -> AsyncIterator[FakeControlPlane]:
    cp = FakeControlPlane(**options)
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(what: str, probe: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for shim in tmp_path.glob("replicas/*/shim.json"):  # replicas outlive agents by design
        info = json.loads(shim.read_text())
        with contextlib.suppress(OSError):
            os.killpg(info["pgid"], signal.SIGKILL)


def config(cp: FakeControlPlane, state: Path, **extra: Any) -> AgentConfig:
    # Unconfined: the fake control plane sends no workspace uid, and the workloads here
    # share files with the test (tests/security runs confined agents against a real one).
    options: dict[str, Any] = {
        "join_token": JOIN,
        "fake_gpus": "H100:2",
        "isolation": IsolationMode.NONE,
        **extra,
    }
    return AgentConfig(server=cp.url, state_dir=state, **options)


def assignment(rid: str, script: str, **extra: Any) -> ReplicaAssignment:
    return ReplicaAssignment(
        replica_id=rid,
        job="train",
        workspace="default",
        attempt=1,
        rank=0,
        argv=["sh", "-c", script],
        env=extra.pop("env", {}),
        **extra,
    )


def joined(chunks: list[LogChunk], start: int = 0) -> str:
    offset = start
    for chunk in chunks:
        assert chunk.offset == offset, "chunks must be contiguous"
        offset += chunk.nbytes
    return "".join(c.data for c in chunks)


def test_register_hello_run_a_replica_stream_its_log_and_report_its_exit(state: Path) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state, labels={"rack": "r1"}, name="node-a"))
            async with running(agent) as task:
                conn = await cp.next_connection()
                [registration] = cp.registrations
                assert (registration.name, registration.join_token) == ("node-a", JOIN)
                saved = json.loads((state / "node.json").read_text())
                assert saved == {"server": cp.url, "node_id": "n-1", "node_token": "crn_good"}

                hello = await conn.expect(Hello)
                assert hello.address == "127.0.0.1"  # the interface that reaches the server
                inv = hello.inventory
                assert (inv.gpu_backend, [g.uuid for g in inv.gpus]) == (
                    "fake",
                    [f"FAKE-{socket.gethostname()}-0", f"FAKE-{socket.gethostname()}-1"],
                )
                assert inv.labels == {"rack": "r1"} and inv.cpus >= 1 and inv.disk_mb > 0
                assert hello.replicas == []

                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=0.05))
                script = f'echo "start $X"; {WAIT_FOR_GO}; printf "h\\303\\251llo\\n"; exit 3'
                r1 = assignment("r1", script, env={"X": "42"})
                await conn.send(Desired(replicas=[r1]))

                report = await conn.expect(ReplicaReport)
                assert (report.replica_id, report.phase) == ("r1", "running")
                assert report.pid is not None and alive(report.pid)
                first = await conn.expect(LogChunk)
                assert (first.offset, first.data) == (0, "start 42\n")

                await conn.send(Desired(replicas=[r1]))  # level-triggered: a repeat is a no-op
                (state / "replicas/r1/work/go").touch()
                chunks, report = await conn.logs_until_report()
                assert joined([first, *chunks]) == "start 42\nhéllo\n"
                assert (report.phase, report.exit_code) == ("exited", 3)
                assert report.log_bytes == len("start 42\nhéllo\n".encode())
                assert conn.heartbeats >= 1
                assert not task.done()
            assert task.result() == 0
            assert [p.name for p in (state / "replicas").iterdir()] == ["r1"]

    run(body())


def test_after_a_dropped_connection_the_agent_reconnects_and_reports_its_replica(
    state: Path,
) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state, stop_grace_s=5))
            async with running(agent):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                script = f"echo one; {WAIT_FOR_GO}; echo two; sleep 1000"
                await conn.send(Desired(replicas=[assignment("r1", script)]))
                running_report = await conn.expect(ReplicaReport)
                assert (await conn.expect(LogChunk)).data == "one\n"

                await conn.ws.close(code=1012)  # the server restarts
                again = await cp.next_connection()
                hello = await again.expect(Hello)
                assert len(cp.registrations) == 1  # the saved identity is reused
                [report] = hello.replicas
                assert (report.replica_id, report.phase) == ("r1", "running")
                assert report.pid == running_report.pid and alive(report.pid or 0)

                # The server has the first 4 bytes; the rest comes on the new connection.
                await again.send(
                    Welcome(node_id="n-1", heartbeat_interval_s=1, log_offsets={"r1": 4})
                )
                (state / "replicas/r1/work/go").touch()
                chunk = await again.expect(LogChunk)
                assert (chunk.offset, chunk.data) == (4, "two\n")

                await again.send(Desired(replicas=[]))  # no longer wanted: stop it
                chunks, stopped = await again.logs_until_report()
                assert chunks == []
                assert (stopped.phase, stopped.exit_code, stopped.log_bytes) == ("exited", 143, 8)
                assert not alive(report.pid or 0)

    run(body())


def test_a_rejected_join_token_ends_the_agent_with_one_clear_line(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with control_plane(accept_join=False) as cp:
            code = await asyncio.wait_for(Agent(config(cp, state)).run(), 15)
            assert code == 1
            rejected = [m for m in caplog.messages if m.startswith("join token rejected by")]
            assert len(rejected) == 1 and cp.url in rejected[0]
            assert not (state / "node.json").exists()

    caplog.set_level(logging.INFO)
    run(body())


def test_a_rejected_node_token_registers_again_with_the_join_token(state: Path) -> None:
    async def body() -> None:
        async with control_plane(node_token="crn_new") as cp:
            save_identity(state, NodeIdentity(cp.url, "n-1", "crn_stale"))
            async with running(Agent(config(cp, state))):
                await (await cp.next_connection()).expect(Hello)
            assert cp.rejected_connects == 1 and len(cp.registrations) == 1
            assert json.loads((state / "node.json").read_text())["node_token"] == "crn_new"

    run(body())


def test_a_rejected_node_token_without_a_join_token_ends_the_agent(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            save_identity(state, NodeIdentity(cp.url, "n-1", "crn_stale"))
            agent = Agent(config(cp, state, join_token=None))
            assert await asyncio.wait_for(agent.run(), 15) == 1
            assert any("node token rejected" in m for m in caplog.messages)
            assert cp.registrations == []

    run(body())


def test_an_unreachable_server_is_retried_with_one_line_per_attempt(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed

    async def body() -> None:
        cfg = AgentConfig(
            server=f"http://127.0.0.1:{port}",
            state_dir=state,
            join_token=JOIN,
            isolation=IsolationMode.NONE,
        )
        agent = Agent(cfg)
        async with running(agent) as task:
            await until(
                "three failed attempts",
                lambda: sum("retrying registration" in m for m in caplog.messages) >= 3,
            )
            assert not task.done()
        assert task.result() == 0
        retries = [r for r in caplog.records if "retrying registration" in r.getMessage()]
        assert all(r.exc_info is None and r.levelno == logging.WARNING for r in retries)
        delays = [float(r.getMessage().rsplit(" ", 1)[1].rstrip("s")) for r in retries[:3]]
        assert delays == [0.2, 0.4, 0.8]

    caplog.set_level(logging.INFO)
    run(body())


@pytest.mark.parametrize("stop_replicas", [False, True], ids=["leave", "stop"])
def test_shutdown_leaves_replicas_running_unless_told_to_stop_them(
    state: Path, stop_replicas: bool
) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state, stop_replicas_on_exit=stop_replicas, stop_grace_s=5))
            task = asyncio.create_task(agent.run())
            conn = await cp.next_connection()
            await conn.expect(Hello)
            await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
            await conn.send(Desired(replicas=[assignment("r1", "echo up; sleep 1000")]))
            pid = (await conn.expect(ReplicaReport)).pid
            assert pid is not None
            assert (await conn.expect(LogChunk)).data == "up\n"
            agent.stop()
            if stop_replicas:  # stopped, and reported before the connection closes
                report = await conn.expect(ReplicaReport)
                assert (report.phase, report.exit_code, report.log_bytes) == ("exited", 143, 3)
            assert await asyncio.wait_for(task, 15) == 0
            await asyncio.wait_for(conn.closed.wait(), 10)
            assert alive(pid) is not stop_replicas

    run(body())


def test_run_agent_exits_0_on_sigterm(state: Path) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            code = (
                "import sys; from pathlib import Path; "
                "from corral.agent.config import AgentConfig; "
                "from corral.agent.main import run_agent; "
                f"sys.exit(run_agent(AgentConfig({cp.url!r}, Path({str(state)!r}), "
                f"join_token={JOIN!r}, isolation='none')))"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE
            )
            conn = await cp.next_connection(timeout=20)
            hello = await conn.expect(Hello)
            assert hello.inventory.gpu_backend in ("none", "nvml")
            await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, stderr.decode()
            assert "SIGTERM: shutting down" in stderr.decode()
            assert "Traceback" not in stderr.decode()

    run(body())


def test_a_desired_set_in_parts_is_applied_once_whole(state: Path) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state))
            async with running(agent):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                r1, r2 = assignment("r1", "sleep 30"), assignment("r2", "sleep 30")
                await conn.send(Desired(replicas=[r1], generation=5, part=0, parts=2))
                # An unfinished older generation is dropped when a newer one starts.
                await conn.send(Desired(replicas=[r2], generation=6, part=1, parts=2))
                await conn.send(Desired(replicas=[r1], generation=6, part=0, parts=2))
                first = await conn.expect(ReplicaReport)
                second = await conn.expect(ReplicaReport)
                assert {first.replica_id, second.replica_id} == {"r1", "r2"}
                # Half a set must not stop what the other half names.
                await conn.send(Desired(replicas=[r1], generation=7, part=0, parts=2))
                r3 = assignment("r3", "sleep 30")
                await conn.send(Desired(replicas=[r1, r2, r3], generation=8))
                third = await conn.expect(ReplicaReport)  # generation 8 was applied
                assert third.replica_id == "r3"
                assert all(not r.stopping for r in agent.runner.records.values())
                await agent.runner.stop_all()

    run(body())


def test_a_replica_the_server_thinks_runs_here_but_never_did_is_reported_exited(
    state: Path,
) -> None:
    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state))
            async with running(agent):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                ghost = assignment("ghost", "true", started=True)
                await conn.send(Desired(replicas=[ghost]))
                report = await conn.expect(ReplicaReport)
                assert (report.replica_id, report.phase, report.exit_code) == (
                    "ghost",
                    "exited",
                    None,
                )
                assert report.error is not None and "no record" in report.error
                assert not (state / "replicas" / "ghost" / "shim.json").exists()

    run(body())
