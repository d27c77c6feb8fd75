"""Admission throughput end to end: jobs submitted and placed per second with 1,000 nodes.

A real control plane (`python -m corral.server`, SQLite, in a temporary CORRAL_HOME on
loopback) and NODES simulated nodes of GPUS_PER_NODE fake H100s (80 GiB, `gpu_backend:
fake`, as the agent's `--fake-gpus H100:8` reports them; zone/rack labels, 32 nodes a rack).
The nodes run in a subprocess of their own, one asyncio loop (`--sim inproc`: in the
submitting process instead; on 2 cores the subprocess keeps 1,000 sockets' traffic off the
submitting loop). Each node registers over HTTP with the join token, holds one WebSocket on
/v1/agent/connect, says hello, heartbeats every HEARTBEAT_S (random phase; the server's
default of 1 s costs ~2 ms of server CPU a beat, two cores' worth for 1,000 nodes, so the
fleet is configured at 10 s through CORRAL_HEARTBEAT_INTERVAL), reads every desired set,
and, like the agent, answers each replica new to it with a ReplicaReport phase=running
(`--no-report`: it does not) and dials again when the server drops it. Between rounds the
nodes report every replica exited (code 0), which frees the fleet for the next round. One
node a PROBE_S pings the server: `ws_pong_*` is how long the server took to read it (it
stops reading a socket while that node's last message waits for a database thread, and
drops the node when its own keepalive ping goes unanswered for 10 s).

Each round, in a workspace of its own, submits SINGLE_JOBS 1-GPU jobs and GANGS gangs of
GANG_REPLICAS x 8 GPUs, shuffled together, through `POST /v1/workspaces/{ws}/jobs` with
CONCURRENCY requests in flight (one keep-alive connection each: `Http11`, not httpx, whose
CPU cost would compete with the server's), waits until the nodes have been sent every
replica, and reads the server's own timestamps from one `GET /v1/workspaces/{ws}/jobs`: a
job is placed when all its replicas have an `assigned_at`.

  jobs_per_s    = jobs placed ÷ (last assigned_at - first submitted_at)
  submit_rps    = jobs ÷ (last submitted_at - first submitted_at): the API's acceptance rate
  submit_to_placed_p50/p99_ms: per job, its last replica's assigned_at - its submitted_at
  submit_to_delivered_p99_ms: until its node got the replica in a desired set (node clock:
                  the same machine's)
  server_cpu_s, server_cpu_ms_per_job: the server process's CPU time during the round

A warm-up round of WARMUP_JOBS, then ROUNDS rounds on the same server and fleet (no round
starts past BUDGET_S, so it ends in about 3 minutes on 2 cores even when the server
struggles); the median round by jobs_per_s is reported. The default is sized for today's
server; `--singles 4000 --gangs 200` fills 7,200 of the fleet's 8,000 GPUs. `--py-spy FILE`
samples the server with py-spy (when on PATH) during the measured rounds and prints where
its Python time went (samples holding the GIL); `--keep DIR` keeps the server's home.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

import corral
from corral.wire.agent import (
    Gpu,
    Heartbeat,
    Hello,
    Inventory,
    RegisterRequest,
    RegisterResponse,
    ReplicaReport,
)

NODES = 1000
GPUS_PER_NODE = 8
GPU_MODEL, GPU_MEMORY_MB = "H100", 80 * 1024
RACK_NODES = 32
SINGLE_JOBS = 950
GANGS = 50
GANG_REPLICAS = 2
CONCURRENCY = 32
ROUNDS = 5  # the median of five: one round on a shared 2-core machine can be 20% off
WARMUP_JOBS = 200
HEARTBEAT_S = 10.0  # not the default 1s: see the module doc
LOST_AFTER_S = 3600.0  # nobody is lost during a run, whatever the load
SEED = 1
ADMIN_TOKEN = "crl_admit-throughput-bench"
JOIN_TOKEN = "crj_admit-throughput-bench"
SETUP_CONCURRENCY = 32
T = TypeVar("T")
STALL_S = 15.0  # a round gives up when nothing new was delivered for this long
BUDGET_S = 170.0  # no new round starts past this (setup included)
PROBE_S, PROBE_TIMEOUT_S = 0.25, 30.0  # nodes ping the server this often


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- simulated nodes ------------------------------------------------------------------------


@dataclass
class SimNode:
    index: int
    name: str
    token: str = ""
    ws: ClientConnection | None = None
    known: set[str] = field(default_factory=set)  # every replica ever in its desired set
    desired: set[str] = field(default_factory=set)  # the server's last desired set


class Fleet:
    """NODES simulated agents in one asyncio loop, speaking corral.wire.agent.

    Each node, like the agent: hello (with the replicas it runs) and welcome, then a
    heartbeat every `heartbeat_s` and a running report for each replica new in a desired
    set; when the server drops the connection, it dials again after 1-2 s.
    """

    def __init__(
        self, server: str, nodes: int, gpus: int, heartbeat_s: float, report: bool
    ) -> None:
        self.server = server
        self.nodes = [SimNode(i, f"sim-{i:04d}") for i in range(nodes)]
        self.gpus = gpus
        self.heartbeat_s = heartbeat_s
        self.report = report
        self.delivered: dict[str, float] = {}  # replica id -> when first received
        self.desired_messages = 0
        self.disconnects = 0
        self.pongs: list[float] = []  # seconds each probe ping took to come back
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random(SEED)

    def _inventory(self, node: SimNode) -> Inventory:
        rack = node.index // RACK_NODES
        return Inventory(
            hostname=node.name,
            cpus=128.0,
            memory_mb=2 * 1024 * 1024,
            disk_mb=8 * 1024 * 1024,
            gpus=[
                Gpu(index=i, uuid=f"FAKE-{node.name}-{i}", model=GPU_MODEL, memory_mb=GPU_MEMORY_MB)
                for i in range(self.gpus)
            ],
            gpu_backend="fake",
            labels={"zone": f"z{rack // 8}", "rack": f"r{rack:03d}"},
            agent_version=corral.__version__,
        )

    async def start(self) -> dict[str, float]:
        """Register every node, then connect each; returns the seconds each phase took."""
        t0 = time.monotonic()
        limits = httpx.Limits(max_connections=SETUP_CONCURRENCY)
        async with httpx.AsyncClient(base_url=self.server, timeout=60, limits=limits) as http:
            await _bounded(
                [functools.partial(self._register, http, n) for n in self.nodes],
                SETUP_CONCURRENCY,
            )
        t1 = time.monotonic()
        await _bounded([functools.partial(self._connect, n) for n in self.nodes], SETUP_CONCURRENCY)
        t2 = time.monotonic()
        self._tasks = [asyncio.create_task(self._life(n)) for n in self.nodes]
        self._tasks.append(asyncio.create_task(self._probe()))
        return {"register_s": round(t1 - t0, 2), "connect_s": round(t2 - t1, 2)}

    async def _register(self, http: httpx.AsyncClient, node: SimNode) -> None:
        request = RegisterRequest(
            join_token=JOIN_TOKEN, name=node.name, inventory=self._inventory(node)
        )
        response = await http.post(
            "/v1/agent/register",
            content=request.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        node.token = RegisterResponse.model_validate_json(response.content).node_token

    async def _connect(self, node: SimNode) -> None:
        url = self.server.replace("http://", "ws://", 1) + "/v1/agent/connect"
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {node.token}"},
            open_timeout=60,
            max_size=64 * 1024 * 1024,
        )
        running = sorted(node.desired) if self.report else []
        hello = Hello(
            inventory=self._inventory(node),
            address="127.0.0.1",
            replicas=[ReplicaReport(replica_id=r, phase="running") for r in running],
        )
        await ws.send(hello.model_dump_json())
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"{node.name}: expected welcome, got {welcome.get('type')}")
        node.ws = ws

    async def _life(self, node: SimNode) -> None:
        while True:
            assert node.ws is not None
            beats = asyncio.create_task(self._heartbeats(node.ws))
            try:
                await self._receive(node, node.ws)
            finally:
                beats.cancel()
                await asyncio.gather(beats, return_exceptions=True)
            self.disconnects += 1
            while True:
                await asyncio.sleep(1.0 + self._rng.random())
                try:
                    await self._connect(node)
                    break
                except (OSError, TimeoutError, WebSocketException, RuntimeError) as exc:
                    self._error(f"{node.name}: reconnecting: {exc}")

    async def _probe(self) -> None:
        """Ping one node's connection every PROBE_S: how long the server takes to answer.

        The server's event loop answers pings (its own keepalive pings time out after 10 s
        without an answer, and drop the node), so this is its responsiveness as nodes see it.
        """
        pending: set[asyncio.Task[None]] = set()
        for i in itertools.count():
            await asyncio.sleep(PROBE_S)
            node = self.nodes[(i * 97) % len(self.nodes)]
            if node.ws is not None:
                task = asyncio.create_task(self._ping(node.ws))
                pending.add(task)
                task.add_done_callback(pending.discard)

    async def _ping(self, ws: ClientConnection) -> None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(await ws.ping(), PROBE_TIMEOUT_S)
        except (ConnectionClosed, TimeoutError):
            self.pongs.append(PROBE_TIMEOUT_S)
        else:
            self.pongs.append(time.perf_counter() - started)

    def _error(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)

    async def _heartbeats(self, ws: ClientConnection) -> None:
        await asyncio.sleep(self._rng.uniform(0, self.heartbeat_s))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(Heartbeat(sent_at=time.time()).model_dump_json())
                await asyncio.sleep(self.heartbeat_s)

    async def _receive(self, node: SimNode, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                message = json.loads(text)
                if message.get("type") != "desired":
                    continue
                self.desired_messages += 1
                now = time.time()
                node.desired = {r["replica_id"] for r in message["replicas"]}
                new = node.desired - node.known
                node.known |= new
                for replica_id in new:
                    self.delivered[replica_id] = now
                if self.report:
                    for replica_id in sorted(new):
                        report = ReplicaReport(
                            replica_id=replica_id,
                            phase="running",
                            pid=100_000 + len(self.delivered),
                            started_at=now,
                        )
                        await ws.send(report.model_dump_json())
        except ConnectionClosed as exc:
            self._error(f"{node.name}: connection closed ({exc})")

    async def finish(self) -> int:
        """Report every replica the server wants run as exited (code 0); returns how many.

        Level-triggered like the agent: a report that was lost is sent again next time.
        """
        count = 0
        now = time.time()
        for node in self.nodes:
            if node.ws is None:
                continue
            for replica_id in sorted(node.desired):
                report = ReplicaReport(
                    replica_id=replica_id,
                    phase="exited",
                    exit_code=0,
                    started_at=now,
                    finished_at=now,
                    log_bytes=0,
                )
                with contextlib.suppress(ConnectionClosed):
                    await node.ws.send(report.model_dump_json())
                    count += 1
        return count

    def status(self) -> dict[str, Any]:
        return {
            "delivered": len(self.delivered),
            "busy_nodes": sum(1 for n in self.nodes if n.desired),
            "desired_messages": self.desired_messages,
            "disconnects": self.disconnects,
            "pongs": len(self.pongs),
            "errors": self.errors[:5],
        }

    def pongs_since(self, start: int) -> list[float]:
        return self.pongs[start:]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(n.ws.close() for n in self.nodes if n.ws is not None), return_exceptions=True
        )


async def _bounded(calls: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


class FleetControl(Protocol):
    async def status(self) -> dict[str, Any]: ...
    async def finish(self) -> int: ...
    async def delivered(self) -> dict[str, float]: ...
    async def pongs(self, start: int) -> list[float]: ...
    async def close(self) -> None: ...
    def pid(self) -> int: ...


class LocalFleet:
    """The fleet in this process's loop."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def status(self) -> dict[str, Any]:
        return self.fleet.status()

    async def finish(self) -> int:
        return await self.fleet.finish()

    async def delivered(self) -> dict[str, float]:
        return dict(self.fleet.delivered)

    async def pongs(self, start: int) -> list[float]:
        return self.fleet.pongs_since(start)

    async def close(self) -> None:
        await self.fleet.close()

    def pid(self) -> int:
        return os.getpid()


class RemoteFleet:
    """The fleet in a subprocess (this script with --serve-fleet), driven over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(
        cls, server: str, nodes: int, heartbeat_s: float, report: bool
    ) -> tuple[RemoteFleet, dict[str, Any]]:
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-fleet",
            server,
            "--nodes",
            str(nodes),
            "--heartbeat",
            str(heartbeat_s),
        ]
        if not report:
            args.append("--no-report")
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=256 * 1024 * 1024,
        )
        fleet = cls(proc)
        ready = await fleet._read()
        return fleet, ready

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet process ended (exit code {await self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"fleet: {reply['error']}")
        return reply

    async def _call(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read()

    async def status(self) -> dict[str, Any]:
        return await self._call("status")

    async def finish(self) -> int:
        return int((await self._call("finish"))["reported"])

    async def delivered(self) -> dict[str, float]:
        return dict((await self._call("delivered"))["delivered"])

    async def pongs(self, start: int) -> list[float]:
        return list((await self._call(f"pongs {start}"))["pongs"])

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call("quit"), 10)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def pid(self) -> int:
        return self.proc.pid


async def serve_fleet(server: str, nodes: int, heartbeat_s: float, report: bool) -> None:
    """--serve-fleet: run the fleet; answer one JSON line per command read from stdin."""
    fleet = Fleet(server, nodes, GPUS_PER_NODE, heartbeat_s, report)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    try:
        try:
            reply({"ready": True, **await fleet.start()})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
            return
        while line := (await reader.readline()).decode().strip():
            if line == "status":
                reply(fleet.status())
            elif line == "finish":
                reply({"reported": await fleet.finish()})
            elif line == "delivered":
                reply({"delivered": fleet.delivered})
            elif line.startswith("pongs "):
                reply({"pongs": fleet.pongs_since(int(line.split()[1]))})
            elif line == "quit":
                reply({"bye": True})
                break
    finally:
        await fleet.close()


# --- the control plane and the client -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    home: Path, port: int, heartbeat_s: float, database_url: str | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CORRAL_HOME": str(home),
        "CORRAL_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
        "CORRAL_BOOTSTRAP_JOIN_TOKEN": JOIN_TOKEN,
        "CORRAL_NODE_LOST_AFTER": str(LOST_AFTER_S),
        "CORRAL_HEARTBEAT_INTERVAL": str(heartbeat_s),
    }
    env.pop("CORRAL_DATABASE_URL", None)  # SQLite under CORRAL_HOME, unless --database-url
    if database_url:
        env["CORRAL_DATABASE_URL"] = database_url
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--home",
            str(home),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


async def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not answer /healthz in time")


def job_specs(prefix: str, singles: int, gangs: int, seed: int) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [
        {
            "name": f"{prefix}-s{i:05d}",
            "command": "true",
            "resources": {"gpus": 1, "cpus": 0.1, "memory": "16Mi"},
        }
        for i in range(singles)
    ]
    for i in range(gangs):
        gang = {
            "name": f"{prefix}-g{i:04d}",
            "command": "true",
            "replicas": GANG_REPLICAS,
            "resources": {"gpus": 8, "cpus": 8, "memory": "64Gi"},
        }
        specs.append(gang)
    random.Random(seed).shuffle(specs)  # gangs arrive among the singles
    return specs


def _replicas(spec: dict[str, Any]) -> int:
    return int(spec.get("replicas", 1))


@dataclass
class RoundResult:
    jobs: int
    placed: int
    jobs_per_s: float
    submit_rps: float
    p50_ms: float
    p99_ms: float
    delivered_p99_ms: float | None
    running: int
    running_p99_ms: float | None
    server_cpu_s: float
    fleet_cpu_s: float
    client_cpu_s: float
    wall_s: float
    rejected: int
    desired_messages: int
    disconnects: int
    pong_p99_ms: float | None
    pong_max_ms: float | None


class Http11:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the load generator.

    httpx spends ~3 ms of CPU a request; on 2 cores that is CPU the server under test
    does not get. This writes the request and reads a Content-Length response, no more
    (the role `wrk` plays for HTTP benchmarks).
    """

    def __init__(self, url: str, token: str) -> None:
        host_port = url.removeprefix("http://").rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.head = f"Host: {host_port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                self.writer = None
        data = await self.reader.readexactly(length)
        return int(status_line.split()[1]), data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


async def submit_all(
    url: str, workspace: str, specs: list[dict[str, Any]], concurrency: int
) -> tuple[int, int]:
    """Submit every spec, `concurrency` in flight: (replicas accepted, jobs not accepted)."""
    queue = list(reversed(specs))
    rejected = accepted = 0
    path = f"/v1/workspaces/{workspace}/jobs"

    async def worker() -> None:
        nonlocal rejected, accepted
        conn = Http11(url, ADMIN_TOKEN)
        try:
            while queue:
                spec = queue.pop()
                try:
                    status, body = await conn.post(path, json.dumps(spec).encode())
                except (OSError, asyncio.IncompleteReadError) as exc:
                    await conn.close()
                    problem = f"{type(exc).__name__} {exc}"
                else:
                    if status == 201:
                        accepted += _replicas(spec)
                        continue
                    problem = f"HTTP {status} {body[:200]!r}"
                rejected += 1
                if rejected <= 3:
                    _log(f"submit {spec['name']}: {problem}")
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return accepted, rejected


async def run_round(
    http: httpx.AsyncClient,
    fleet: FleetControl,
    server: subprocess.Popen[bytes],
    workspace: str,
    specs: list[dict[str, Any]],
    concurrency: int,
    profile: Path | None = None,
) -> RoundResult:
    response = await http.post("/v1/workspaces", json={"name": workspace})
    response.raise_for_status()
    before = await fleet.status()
    server_proc, fleet_proc, me = (
        psutil.Process(server.pid),
        psutil.Process(fleet.pid()),
        psutil.Process(),
    )

    def cpu(p: psutil.Process) -> float:
        times = p.cpu_times()
        return float(times.user + times.system)

    spy = start_py_spy(profile, server.pid) if profile else None
    try:
        cpu0 = (cpu(server_proc), cpu(fleet_proc), cpu(me))
        t0 = time.monotonic()
        accepted, rejected = await submit_all(str(http.base_url), workspace, specs, concurrency)
        expected = before["delivered"] + accepted
        # Wait until the nodes were sent every replica (cheap: no load on the server).
        last, last_change = before["delivered"], time.monotonic()
        while True:
            status = await fleet.status()
            if status["delivered"] >= expected:
                break
            if status["delivered"] != last:
                last, last_change = status["delivered"], time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                _log(f"stalled: {status['delivered'] - before['delivered']} replicas delivered")
                break
            await asyncio.sleep(0.02)
        wall = time.monotonic() - t0
        cpu1 = (cpu(server_proc), cpu(fleet_proc), cpu(me))
    finally:
        if spy is not None:
            stop_py_spy(spy)
    desired_messages = status["desired_messages"] - before["desired_messages"]
    pongs = await fleet.pongs(before["pongs"])
    await asyncio.sleep(1.0)  # let the running reports land before reading the jobs
    t_list = time.monotonic()
    jobs = await _all(http, f"/v1/workspaces/{workspace}/jobs", "jobs")
    _log(f"  GET jobs ({len(specs)}) took {time.monotonic() - t_list:.2f}s")
    delivered = await fleet.delivered()
    submitted = [j["submitted_at"] for j in jobs]
    latencies: list[float] = []
    to_node: list[float] = []
    to_running: list[float] = []
    placed_at: list[float] = []
    for job in jobs:
        replicas = job["replicas"]
        assigned = [r["assigned_at"] for r in replicas if r.get("assigned_at") is not None]
        if not replicas or len(assigned) < job["spec"].get("replicas", 1):
            continue
        placed_at.append(max(assigned))
        latencies.append(max(assigned) - job["submitted_at"])
        got = [delivered.get(r["id"]) for r in replicas]
        if all(t is not None for t in got):
            to_node.append(max(t for t in got if t is not None) - job["submitted_at"])
        if job.get("started_at") is not None:
            to_running.append(job["started_at"] - job["submitted_at"])
    span = (max(placed_at) - min(submitted)) if placed_at else float("inf")
    submit_span = max(submitted) - min(submitted) if len(submitted) > 1 else float("inf")
    return RoundResult(
        jobs=len(jobs),
        placed=len(latencies),
        jobs_per_s=len(latencies) / span if span > 0 else 0.0,
        submit_rps=len(jobs) / submit_span if submit_span > 0 else 0.0,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=_quantile(latencies, 0.99) * 1000 if latencies else float("nan"),
        delivered_p99_ms=_quantile(to_node, 0.99) * 1000 if to_node else None,
        running=len(to_running),
        running_p99_ms=_quantile(to_running, 0.99) * 1000 if to_running else None,
        server_cpu_s=cpu1[0] - cpu0[0],
        fleet_cpu_s=cpu1[1] - cpu0[1] if fleet.pid() != os.getpid() else 0.0,
        client_cpu_s=cpu1[2] - cpu0[2],
        wall_s=wall,
        rejected=rejected,
        desired_messages=desired_messages,
        disconnects=status["disconnects"] - before["disconnects"],
        pong_p99_ms=_quantile(pongs, 0.99) * 1000 if pongs else None,
        pong_max_ms=max(pongs) * 1000 if pongs else None,
    )


async def drain(fleet: FleetControl, timeout: float = 60) -> None:
    """End every replica on the nodes and wait until no node has anything left to run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await fleet.finish()
        resend = time.monotonic() + 10  # reports lost to a dropped connection go again
        while time.monotonic() < min(resend, deadline):
            if (await fleet.status())["busy_nodes"] == 0:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the fleet did not drain: {await fleet.status()}")


# --- py-spy (optional) ----------------------------------------------------------------------


def start_py_spy(out: Path, pid: int) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        _log("--py-spy: py-spy is not on PATH; not profiling")
        return None
    return subprocess.Popen(
        [
            *(exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"),
            *("--function", "--threads", "--gil", "--nonblocking", "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


# Where the server's samples go: the first of these frames found in a stack names it.
ACTIVITIES = (
    (
        "POST jobs: submit (in a group commit)",
        "submit_job.<locals>.submit (corral/server/api/jobs.py",
    ),
    ("agent: report (in a group commit)", "_handle.<locals>.write (corral/server/api/agent.py"),
    ("group commit: begin/savepoints/commit", "GroupCommit._commit (corral/server/writes.py"),
    ("GET jobs: list_jobs", "list_jobs (corral/server/api/jobs.py"),
    ("auth: principal()", "principal (corral/server/api/deps.py"),
    ("auth: workspace resolve()", "workspace_for.<locals>.resolve (corral/server/api/deps.py"),
    ("agent: hello/disconnect tx", "_in_tx (corral/server/api/agent.py"),
    ("scheduler: load snapshot", "SnapshotLoader.load (corral/server/services/snapshot.py"),
    ("scheduler: place()", "Scheduler.place (corral/core/scheduler/incremental.py"),
    ("scheduler: apply_plan", "apply_plan (corral/server/services/scheduling.py"),
    ("scheduler: other", "SchedulerController."),
    ("hub: desired set", "AgentHub._desired (corral/server/hub.py"),
    ("liveness: stop_overdue", "stop_overdue (corral/server/services/liveness.py"),
    ("liveness: other", "LivenessController."),
)
_PARKED = ("Condition.wait (", "Queue.get (")


def summarize_py_spy(out: Path, top: int = 15) -> None:
    """Print where the server's Python time went (samples of threads holding the GIL, the
    server's scarce resource), by activity and by function (self).

    py-spy samples threads that are running; a worker parked on its queue is left out.
    """
    activity: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first names the thread
        if not frames or frames[-1].startswith(_PARKED):
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for label, prefix in ACTIVITIES:
            if any(f.startswith(prefix) for f in frames):
                activity[label] += count
                break
        else:
            activity["event loop, ASGI, websockets, other"] += count
    _log(f"py-spy: {total} samples holding the GIL (100/s, every thread) in {out}")
    for title, counter, n in (("by activity", activity, len(ACTIVITIES) + 1), ("self", own, top)):
        _log(f"  {title}:")
        for frame, count in counter.most_common(n):
            _log(f"    {100 * count / max(1, total):5.1f}%  {count:6d}  {frame}")


# --- main -----------------------------------------------------------------------------------


async def _all(http: httpx.AsyncClient, path: str, key: str) -> list[dict[str, Any]]:
    """Every item of a list route, page by page (lists are paged since issue 10)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=params, timeout=300)
        response.raise_for_status()
        page = response.json()
        items += page[key]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)  # the machine is shared: other load shows
    root = Path(tempfile.mkdtemp(prefix="corral-admit-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(root / "home", port, args.heartbeat, args.database_url)
    fleet: FleetControl | None = None
    profiles: list[Path] = []
    started = time.monotonic()
    try:
        await wait_healthy(url, server)
        _log(f"server up in {time.monotonic() - started:.1f}s; starting {args.nodes} nodes")
        if args.sim == "inproc":
            local = Fleet(url, args.nodes, GPUS_PER_NODE, args.heartbeat, not args.no_report)
            setup = await local.start()
            fleet = LocalFleet(local)
        else:
            fleet, setup = await RemoteFleet.spawn(
                url, args.nodes, args.heartbeat, not args.no_report
            )
        _log(f"nodes: registered in {setup['register_s']}s, connected in {setup['connect_s']}s")
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        limits = httpx.Limits(max_connections=args.concurrency + 4)
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=120, limits=limits
        ) as http:
            nodes = await _all(http, "/v1/nodes", "nodes")
            ready = sum(1 for n in nodes if n["condition"] == "ready" and n["connected"])
            if ready != args.nodes:
                raise RuntimeError(f"only {ready} of {args.nodes} nodes are ready and connected")
            warm_gangs = args.gangs * WARMUP_JOBS // (args.singles + args.gangs)
            warm = WARMUP_JOBS - warm_gangs
            result = await run_round(
                http,
                fleet,
                server,
                "bench-warmup",
                job_specs("w", warm, warm_gangs, SEED),
                args.concurrency,
            )
            _log(f"warm-up: {result.placed}/{result.jobs} placed, {result.jobs_per_s:.0f} jobs/s")
            await drain(fleet)
            results: list[RoundResult] = []
            aborted: str | None = None
            for r in range(args.rounds):
                specs = job_specs(f"r{r}", args.singles, args.gangs, SEED + r)
                profile = root / f"py-spy.round{r}.txt" if args.py_spy else None
                result = await run_round(
                    http, fleet, server, f"bench-r{r}", specs, args.concurrency, profile
                )
                if profile is not None and profile.exists():
                    profiles.append(profile)
                results.append(result)
                _log(
                    f"round {r + 1}/{args.rounds}: {result.placed}/{result.jobs} placed in "
                    f"{result.wall_s:.1f}s: {result.jobs_per_s:.0f} jobs/s, submit "
                    f"{result.submit_rps:.0f}/s, submit->placed p50 {result.p50_ms:.0f} ms "
                    f"p99 {result.p99_ms:.0f} ms; cpu s: server {result.server_cpu_s:.1f}, "
                    f"nodes {result.fleet_cpu_s:.1f}, client {result.client_cpu_s:.1f}; "
                    f"{result.desired_messages} desired sets, {result.running} running, "
                    f"{result.disconnects} node disconnects, server pong p99 "
                    f"{_ms(result.pong_p99_ms)} max {_ms(result.pong_max_ms)}"
                )
                if r + 1 < args.rounds:
                    if time.monotonic() - started + 2 * result.wall_s > args.budget:
                        aborted = f"time budget ({args.budget:.0f}s) spent after {r + 1} rounds"
                        _log(f"stopping early: {aborted}")
                        break
                    try:
                        await drain(fleet)
                    except RuntimeError as exc:  # report the rounds we have
                        aborted = f"after round {r + 1}: {exc}"[:300]
                        _log(f"stopping early: {aborted}")
                        break
            if args.py_spy and profiles:
                out = Path(args.py_spy)
                out.write_text("".join(p.read_text() for p in profiles))
                summarize_py_spy(out)
            status = await fleet.status()
            if status["errors"]:
                _log(f"node errors: {status['errors']}")
    except BaseException:
        log = root / "home" / "server.log"
        if log.exists():
            _log("server log (tail):\n" + log.read_text(errors="replace")[-3000:])
        raise
    finally:
        if fleet is not None:
            await fleet.close()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if args.keep:  # after the server's exit, which checkpoints the WAL into the db
            shutil.copytree(root / "home", args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    median = sorted(results, key=lambda x: x.jobs_per_s)[len(results) // 2]
    return {
        "bench": "admit_throughput",
        "metric": "jobs_per_s",
        "value": round(median.jobs_per_s, 1),
        "unit": "1/s",
        "higher_is_better": True,
        "target": 500,
        "extra": {
            "submit_to_placed_p99_ms": round(median.p99_ms, 1),
            "submit_to_placed_p50_ms": round(median.p50_ms, 1),
            "submit_rps": round(median.submit_rps, 1),
            "submit_to_delivered_p99_ms": None
            if median.delivered_p99_ms is None
            else round(median.delivered_p99_ms, 1),
            "submit_to_running_p99_ms": None
            if median.running_p99_ms is None
            else round(median.running_p99_ms, 1),
            "placed": median.placed,
            "running": median.running,
            "rejected": median.rejected,
            "server_cpu_s": round(median.server_cpu_s, 2),
            "server_cpu_ms_per_job": round(1000 * median.server_cpu_s / max(1, median.jobs), 2),
            "nodes_cpu_s": round(median.fleet_cpu_s, 2),
            "client_cpu_s": round(median.client_cpu_s, 2),
            "round_wall_s": round(median.wall_s, 2),
            "desired_sets_sent": median.desired_messages,
            "node_disconnects": sum(x.disconnects for x in results),
            "ws_pong_p99_ms": _round(median.pong_p99_ms),
            "ws_pong_max_ms": _round(max((x.pong_max_ms or 0.0) for x in results)),
            "rounds_jobs_per_s": [round(x.jobs_per_s, 1) for x in results],
            "rounds_p99_ms": [round(x.p99_ms, 1) for x in results],
            "node_register_s": setup["register_s"],
            "node_connect_s": setup["connect_s"],
            "total_s": round(time.monotonic() - started, 1),
            "aborted": aborted,
        },
        "conditions": {
            "nodes": args.nodes,
            "gpus_per_node": GPUS_PER_NODE,
            "gpu": f"{GPU_MODEL} 80GiB (fake inventory)",
            "jobs": args.singles + args.gangs,
            "job_mix": f"{args.singles} x 1 GPU + {args.gangs} x {GANG_REPLICAS} replicas x 8 GPU",
            "gpus_requested": args.singles + args.gangs * GANG_REPLICAS * 8,
            "concurrency": args.concurrency,
            "rounds": len(results),
            "rounds_requested": args.rounds,
            "warmup_jobs": WARMUP_JOBS,
            "database": args.database_url.split(":", 1)[0] if args.database_url else "sqlite",
            "heartbeat_interval_s": args.heartbeat,
            "nodes_report_running": not args.no_report,
            "sim": args.sim,
            "cpus": os.cpu_count(),
            "loadavg_1m_at_start": load_at_start,
            "corral": corral.__version__,
            "timestamps": "server-side submitted_at / replicas[].assigned_at",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--singles", type=int, default=SINGLE_JOBS)
    parser.add_argument("--gangs", type=int, default=GANGS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--budget", type=float, default=BUDGET_S, help="start no round past this many seconds"
    )
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_S)
    parser.add_argument("--sim", choices=("process", "inproc"), default="process")
    parser.add_argument("--no-report", action="store_true", help="nodes send no running reports")
    parser.add_argument("--py-spy", metavar="FILE", help="sample the server into FILE (raw)")
    parser.add_argument("--keep", metavar="DIR", help="copy the server's home (db, log) here")
    parser.add_argument(
        "--database-url", metavar="URL", help="the server's CORRAL_DATABASE_URL (default: SQLite)"
    )
    parser.add_argument("--serve-fleet", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the server and the nodes are stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.serve_fleet:
        _run(serve_fleet(args.serve_fleet, args.nodes, args.heartbeat, not args.no_report))
        return
    print(json.dumps(_run(bench(args))))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (uvicorn's does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
