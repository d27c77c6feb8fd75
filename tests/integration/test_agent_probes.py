"""Health probes of serving replicas: a real agent, a stand-in control plane, and workloads
that are small HTTP servers the test turns healthy and sick by touching files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_channel import Conn, config, control_plane, run, running, until

from corral.agent.daemon import Agent
from corral.agent.prober import http_get
from corral.wire.agent import (
    AgentMessage,
    Desired,
    Hello,
    LogChunk,
    Probe,
    ReplicaAssignment,
    ReplicaReport,
    Welcome,
)

# 503 until ./up exists, and while ./sick exists; every path asked is appended to ./asked.
SERVE = """\
import http.server, os, sys

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("asked", "a") as asked:
            asked.write(self.path + "\\n")
        ok = os.path.exists("up") and not os.path.exists("sick")
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer.allow_reuse_address = True
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""

# A replica whose port never answers: the test holds the listening socket (so connections
# complete in the kernel's backlog) and nobody ever reads from them.
SILENT = "import time; time.sleep(1000)"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for shim in tmp_path.glob("replicas/*/shim.json"):  # replicas outlive agents by design
        with contextlib.suppress(OSError):
            os.killpg(json.loads(shim.read_text())["pgid"], signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving(
    rid: str, port: int, work: Path, script: str = SERVE, **probe: object
) -> ReplicaAssignment:
    """A replica serving on `port` from `work`, where the test touches up and sick."""
    work.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {
        "port": port,
        "readiness_path": "/ready",
        "liveness_path": "/live",
        "period_s": 0.05,
        "timeout_s": 1.0,
        "failure_threshold": 2,
        **probe,
    }
    return ReplicaAssignment(
        replica_id=rid,
        job="ep",
        workspace="default",
        attempt=1,
        rank=0,
        argv=[sys.executable, "serve.py", str(port)],
        env={},
        working_dir=str(work),
        files={"serve.py": script},
        probe=Probe.model_validate(settings),
    )


async def next_report(conn: Conn, rid: str | None = None) -> ReplicaReport:
    while True:
        message: AgentMessage = await conn.next()
        if isinstance(message, ReplicaReport) and rid in (None, message.replica_id):
            return message
        assert isinstance(message, LogChunk | ReplicaReport), message


def asked(work: Path) -> list[str]:
    try:
        return (work / "asked").read_text().split()
    except FileNotFoundError:
        return []


def test_ready_unready_and_ready_again_reported_once_each_until_stopped(state: Path) -> None:
    port, work = free_port(), state / "work"

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await conn.expect(Hello)
            await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=0.05))
            await conn.send(Desired(replicas=[serving("s1", port, work)]))
            started = await next_report(conn)
            assert (started.phase, started.ready) == ("running", None)

            # Loading: failure_threshold failed readiness probes say "not ready" once.
            loading = await next_report(conn)
            assert (loading.phase, loading.ready) == ("running", False)
            (work / "up").touch()
            ready = await next_report(conn)
            assert (ready.phase, ready.ready, ready.pid) == ("running", True, started.pid)
            assert set(asked(work)) == {"/ready"}, "readiness until the first pass"

            await asyncio.sleep(0.3)  # still healthy: no news
            (work / "sick").touch()
            sick = await next_report(conn)
            assert (sick.phase, sick.ready) == ("running", False)
            assert asked(work)[-1] == "/live", "liveness once it has been ready"
            (work / "sick").unlink()
            well = await next_report(conn)
            assert (well.phase, well.ready) == ("running", True)
            assert conn.heartbeats > 0

            await conn.send(Desired(replicas=[]))
            stopped = await next_report(conn)
            assert (stopped.phase, stopped.exit_code, stopped.ready) == ("exited", 143, False)
            count = len(asked(work))
            await asyncio.sleep(0.3)
            assert len(asked(work)) == count, "no probes once it is stopped"

    run(body())


def test_a_restarted_agent_probes_its_adopted_replica_from_scratch(state: Path) -> None:
    port, work = free_port(), state / "work"

    async def body() -> None:
        async with control_plane() as cp:
            async with running(Agent(config(cp, state))):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                s1 = serving("s1", port, work)
                (work / "up").touch()
                await conn.send(Desired(replicas=[s1]))
                while (await next_report(conn)).ready is not True:
                    pass
                # While no agent runs, the replica turns sick.
            (work / "sick").touch()
            await asyncio.sleep(0.1)  # a probe the old agent had in flight lands before this
            before = len(asked(work))

            async with running(Agent(config(cp, state))):
                conn = await cp.next_connection()
                hello = await conn.expect(Hello)
                [adopted] = hello.replicas
                assert adopted.phase == "running"
                # What the old agent knew is gone: unknown, or already judged afresh.
                assert adopted.ready in (None, False)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                if adopted.ready is None:
                    assert (await next_report(conn)).ready is False
                assert set(asked(work)[before:]) == {"/ready"}, "from scratch: readiness path"
                (work / "sick").unlink()
                assert (await next_report(conn)).ready is True
                await conn.send(Desired(replicas=[]))
                assert (await next_report(conn)).phase == "exited"

    run(body())


def test_a_silent_replica_holds_up_neither_the_channel_nor_other_replicas(state: Path) -> None:
    port = free_port()
    deaf = socket.create_server(("127.0.0.1", 0), backlog=16)
    silent_port = deaf.getsockname()[1]

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await conn.expect(Hello)
            await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=0.05))
            ok = serving("ok", port, state / "ok")
            (state / "ok" / "up").touch()
            quiet = serving("quiet", silent_port, state / "quiet", SILENT, timeout_s=1.0)
            await conn.send(Desired(replicas=[quiet, ok]))
            seen: list[tuple[str, bool | None]] = []
            beats = 0
            while seen[-1:] != [("quiet", False)]:
                report = await next_report(conn)
                seen.append((report.replica_id, report.ready))
                if seen[-1] == ("ok", True):
                    beats = conn.heartbeats
            # Each probe of "quiet" hangs for its whole timeout; "ok" is judged meanwhile
            # (unready at first if its server was not listening yet, then ready).
            assert seen.index(("ok", True)) < seen.index(("quiet", False))
            assert [r for rid, r in seen if rid == "quiet"] == [None, False]
            await until("heartbeats going on", lambda: conn.heartbeats > beats + 2)
            await conn.send(Desired(replicas=[]))
            for _ in range(2):
                assert (await next_report(conn)).phase == "exited"

    with deaf:
        run(body())


def test_one_probe_reads_the_status_line_and_fails_clearly() -> None:
    async def body() -> None:
        answers = {
            b"ok": b"HTTP/1.1 204 No Content\r\n\r\n",
            b"busy": b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            b"ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
        }

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            key = request.split()[1].strip(b"/")
            if key != b"silent":
                writer.write(answers[key])
                await writer.drain()
                writer.close()
            else:
                await asyncio.sleep(5)

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            ok = await http_get(port, "/ok", 1)
            assert (ok.ok, ok.detail) == (True, "204")
            busy = await http_get(port, "/busy", 1)
            assert (busy.ok, busy.detail) == (False, "503")
            ssh = await http_get(port, "/ssh", 1)
            assert not ssh.ok and ssh.detail == "not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'"
            silent = await http_get(port, "/silent", 0.2)
            assert (silent.ok, silent.detail) == (False, "no answer within 0.2s")
        refused = await http_get(free_port(), "/", 1)
        assert (refused.ok, refused.detail) == (False, "connection refused")

    run(body())
