"""Ports asked of the host, with a real agent, real replicas and real listening sockets held
by a process that is not corral's: what the agent reports, refuses, blames and probes.

The stand-in control plane is test_agent_channel's; the "foreign" process is a small
Python server this test starts in its own session, as any other program on the node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_channel import Conn, assignment, config, control_plane, run, running, until
from test_agent_probes import SERVE, free_port, serving

from corral.agent import ports
from corral.agent.daemon import Agent
from corral.agent.sandbox.modes import IsolationMode
from corral.wire.agent import (
    AgentMessage,
    Desired,
    Hello,
    LogChunk,
    Probe,
    ReplicaReport,
    Welcome,
)

# Another program on the node: it waits for `bind` to exist (if asked to), then listens on
# the port and answers every GET with 200, as `python -m http.server` does.
FOREIGN = """\
import http.server, os, sys, time
port, gate = int(sys.argv[1]), sys.argv[2]
while gate != "-" and not os.path.exists(gate):
    time.sleep(0.02)

class Any(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Any).serve_forever()
"""


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for shim in tmp_path.glob("replicas/*/shim.json"):  # replicas outlive agents by design
        with contextlib.suppress(OSError):
            os.killpg(json.loads(shim.read_text())["pgid"], signal.SIGKILL)


@contextlib.contextmanager
def foreign(port: int, gate: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not corral's listening on `port` (once `gate` exists, if given)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, str(port), str(gate) if gate else "-"],
        start_new_session=True,
    )
    try:
        if gate is None:
            listening(port)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ports.on_port(port):
        assert time.monotonic() < deadline, f"nothing listens on {port} after {timeout}s"
        time.sleep(0.02)


async def report(conn: Conn, rid: str) -> ReplicaReport:
    while True:
        message: AgentMessage = await conn.next()
        if isinstance(message, ReplicaReport) and message.replica_id == rid:
            return message
        assert isinstance(message, LogChunk | ReplicaReport), message


async def connected(conn: Conn) -> Hello:
    hello = await conn.expect(Hello)
    await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=0.2))
    return hello


def test_the_node_reports_its_listening_ports_at_hello_and_when_they_change(state: Path) -> None:
    port, later = free_port(), free_port()

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state, ports_poll_s=0.05))):
            with foreign(port):
                conn = await cp.next_connection()
                hello = await connected(conn)
                assert hello.ports is not None and port in hello.ports
                assert hello.ports == sorted(set(hello.ports))
                with foreign(later):
                    await until(
                        "the new port reported", lambda: any(later in p.ports for p in conn.ports)
                    )
                await until(
                    "its end reported",
                    lambda: later not in conn.ports[-1].ports and port in conn.ports[-1].ports,
                )

    run(body())


def test_a_replica_whose_port_is_taken_is_not_started_and_says_by_whom(state: Path) -> None:
    port = free_port()

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state, ports_poll_s=30))):
            conn = await cp.next_connection()
            await connected(conn)
            with foreign(port) as stranger:
                reported = len(conn.ports)
                ran = state / "ran"
                await conn.send(Desired(replicas=[assignment("r1", f"touch {ran}", port=port)]))
                exited = await report(conn, "r1")
            assert (exited.phase, exited.exit_code, exited.port_conflict) == ("exited", None, port)
            assert exited.error == (
                f"port {port}, which corral gave it, is held by another process on this node: "
                "not started (placed again on a free port)"
            )
            assert str(stranger.pid) not in exited.error  # it may be another workspace's
            assert not ran.exists(), "the workload never ran"
            # Sent before the exit report (the poll is 30 s away): the server knows the
            # port is taken before it places the job again.
            assert len(conn.ports) == reported + 1 and port in conn.ports[-1].ports

    run(body())


def test_a_failure_while_an_older_stranger_holds_its_port_is_not_the_scripts(state: Path) -> None:
    port, gate, go = free_port(), state / "bind", state / "go"

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await connected(conn)
            # Started before the replica, listening only once the replica runs: the race
            # between the agent's check and the workload's own bind.
            with foreign(port, gate) as stranger:
                script = f"while [ ! -e {go} ]; do sleep 0.02; done; exit 1"
                await conn.send(Desired(replicas=[assignment("r1", script, port=port)]))
                started = await report(conn, "r1")
                assert started.phase == "running", started
                gate.touch()
                await until("the stranger listening", lambda: ports.on_port(port))
                go.touch()
                exited = await report(conn, "r1")
            assert (exited.phase, exited.exit_code, exited.port_conflict) == ("exited", 1, port)
            assert exited.error == (
                f"exited with code 1 while port {port}, which corral gave it, was held by "
                "another process since before it started: it could not listen there (not an "
                "error in the script)"
            )
            assert str(stranger.pid) not in exited.error  # it may be another workspace's
            saved = json.loads((state / "replicas" / "r1" / "exit.json").read_text())
            assert saved["port_conflict"] == port, "final: a restarted agent says the same"

    run(body())


def test_a_failure_with_its_port_free_or_taken_by_a_younger_process_is_the_scripts(
    state: Path,
) -> None:
    free, taken, go = free_port(), free_port(), state / "go"

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await connected(conn)
            script = f"while [ ! -e {go} ]; do sleep 0.02; done; exit 1"
            await conn.send(
                Desired(
                    replicas=[
                        assignment("free", script, port=free),
                        assignment("young", script, port=taken),
                    ]
                )
            )
            started: set[str] = set()
            while started != {"free", "young"}:  # in either order
                message = await conn.next()
                if isinstance(message, ReplicaReport):
                    assert message.phase == "running", message
                    started.add(message.replica_id)
            with foreign(taken):  # started after the replica: not a stranger it met
                go.touch()
                exits: dict[str, ReplicaReport] = {}
                while len(exits) < 2:
                    message = await conn.next()
                    if isinstance(message, ReplicaReport) and message.phase == "exited":
                        exits[message.replica_id] = message
            for exited in exits.values():
                assert (exited.exit_code, exited.port_conflict, exited.error) == (1, None, None)

    run(body())


def test_a_probe_answered_by_a_stranger_is_not_ready_and_names_it(state: Path) -> None:
    port = free_port()

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await connected(conn)
            with foreign(port) as stranger:
                # The replica never listens (it crash-loops on EADDRINUSE in the issue): the
                # stranger answers 200 to every probe.
                probe = Probe(port=port, readiness_path="/", period_s=0.05, failure_threshold=2)
                replica = assignment("r1", "sleep 600", probe=probe)
                await conn.send(Desired(replicas=[replica]))
                assert (await report(conn, "r1")).ready is None
                unready = await report(conn, "r1")
            assert (unready.phase, unready.ready) == ("running", False)
            assert unready.unready_reason is not None
            assert unready.unready_reason.startswith(
                f"port {port} is held by another process, not this replica (failing for "
            )
            assert str(stranger.pid) not in unready.unready_reason

    run(body())


def test_an_unready_replica_says_what_its_probe_saw_and_a_pass_clears_it(state: Path) -> None:
    port, work = free_port(), state / "work"

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await connected(conn)
            await conn.send(Desired(replicas=[serving("s1", port, work, SERVE)]))
            assert (await report(conn, "s1")).ready is None
            # Refused while Python starts, then 503 while it "loads": each said as it is seen.
            loading = await report(conn, "s1")
            while loading.unready_reason and loading.unready_reason.startswith("connection"):
                assert loading.unready_reason.startswith(f"connection refused on port {port} for ")
                loading = await report(conn, "s1")
            assert loading.ready is False and loading.unready_reason is not None
            assert loading.unready_reason.startswith("GET /ready answered 503 for ")
            (work / "up").touch()
            ready = await report(conn, "s1")
            assert (ready.ready, ready.unready_reason) == (True, None)

    run(body())


def test_a_replica_serving_its_own_port_is_ready(state: Path) -> None:
    port, work = free_port(), state / "work"
    work.mkdir()
    (work / "up").touch()

    async def body() -> None:
        async with control_plane() as cp, running(Agent(config(cp, state))):
            conn = await cp.next_connection()
            await connected(conn)
            replica = serving("s1", port, work, SERVE).model_copy(update={"port": port})
            await conn.send(Desired(replicas=[replica]))
            assert (await report(conn, "s1")).ready is None
            ready = await report(conn, "s1")
            while ready.ready is False:  # refused while Python starts
                ready = await report(conn, "s1")
            assert (ready.ready, ready.unready_reason, ready.port_conflict) == (True, None, None)

    asyncio.run(asyncio.wait_for(body(), 60))


# Standard library only, no files: a confined workload runs as its workspace's uid, which
# may not enter the test's directories.
SERVE_INLINE = """\
import http.server, sys

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="confining replicas takes a root agent")
def test_a_confined_replica_serving_its_own_port_is_ready(state: Path) -> None:
    # Its processes live in a PID namespace of their own; the agent sees them by host pid.
    port = free_port()

    async def body() -> None:
        async with (
            control_plane() as cp,
            running(Agent(config(cp, state, isolation=IsolationMode.USER))),
        ):
            conn = await cp.next_connection()
            await connected(conn)
            probe = Probe(port=port, readiness_path="/", period_s=0.05, failure_threshold=2)
            replica = assignment("c1", "unused", probe=probe, port=port, uid_index=7)
            argv = [sys.executable, "-c", SERVE_INLINE, str(port)]
            await conn.send(Desired(replicas=[replica.model_copy(update={"argv": argv})]))
            assert (await report(conn, "c1")).ready is None
            ready = await report(conn, "c1")
            while ready.ready is False:  # refused while Python starts
                ready = await report(conn, "c1")
            assert (ready.phase, ready.ready, ready.unready_reason) == ("running", True, None)

    run(body())
