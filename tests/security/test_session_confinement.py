"""What a session into a confined replica cannot reach (root, as on a real node): the
session's own secrets, the host's processes and other replicas', the agent's state; and that
a session ends with its replica, refuses a wrong key, and is never started for a replica
that is not running.

Replicas run through the agent's Runner; `Sessions.open` starts the real session server
(enter.py: the replica's namespaces, its uid); a local relay plays the control plane's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from corral.agent.layout import process_start_time
from corral.agent.runner import Runner
from corral.agent.sandbox.policy import Isolation
from corral.agent.sessions.launch import Sessions
from corral.wire.agent import ReplicaAssignment
from corral.wire.sessions import OpenSession
from support.session_relay import Relay

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="confinement is Linux's")

ENTER = b"corral.agent.sessions.enter"


class Keys:
    def __init__(self) -> None:
        self.host = asyncssh.generate_private_key("ssh-ed25519")
        self.user = asyncssh.generate_private_key("ssh-ed25519")
        self.stranger = asyncssh.generate_private_key("ssh-ed25519")
        self.ticket = "tk_" + secrets.token_hex(20)

    def host_pem(self) -> str:
        return str(self.host.export_private_key().decode())

    def host_key_lines(self) -> list[bytes]:
        """The lines of the host key's PEM that are this key's own (not the format's header,
        shared by every ed25519 key)."""
        other = asyncssh.generate_private_key("ssh-ed25519").export_private_key().splitlines()
        lines = [
            line
            for line in self.host.export_private_key().splitlines()
            if line not in other and not line.startswith(b"-----")
        ]
        assert lines
        return lines


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # as the daemon keeps it
    yield path
    # Replicas outlive runners by design: kill whatever a failed test left behind.
    for shim in path.glob("replicas/*/shim.json"):
        info = json.loads(shim.read_text())
        for kill, target in ((os.killpg, info["pgid"]), (os.kill, info["shim_pid"])):
            with contextlib.suppress(OSError):
                kill(target, signal.SIGKILL)


def pod(rid: str, script: str, env: dict[str, str] | None = None) -> ReplicaAssignment:
    # One workspace (one uid) for every replica: only the sandbox keeps them apart.
    return ReplicaAssignment(
        replica_id=rid,
        job=f"dev-{rid}",
        workspace="team-a",
        attempt=1,
        rank=0,
        argv=["sh", "-c", script],
        env=env or {},
        uid_index=7,
    )


def opening(keys: Keys, rid: str, sid: str = "s1") -> OpenSession:
    return OpenSession(
        session_id=sid,
        ticket=keys.ticket,
        replica_id=rid,
        authorized_keys=[keys.user.export_public_key().decode()],
        host_key=keys.host_pem(),
        who="alice",
    )


async def until(what: str, probe: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def connect(relay: Relay, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        relay.port,
        username="alice",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        password=None,
        kbdint_auth=False,
    )


async def started(runner: Runner, assignment: ReplicaAssignment) -> Any:
    runner.start(assignment)
    record = runner.records[assignment.replica_id]
    await until(f"replica {assignment.replica_id} to run", lambda: record.pid is not None)
    return record


async def stopped(runner: Runner, *rids: str) -> None:
    for rid in rids:
        runner.stop(rid)
    await asyncio.gather(*(asyncio.wait_for(runner.records[r].done.wait(), 10) for r in rids))


# --- the host's view of processes -----------------------------------------------------------


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def ppid_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and ppid_of(int(p)) == pid]


def pid_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def inner_pid(pid: int) -> int:
    """`pid`'s number in its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def session_servers() -> tuple[int, int]:
    """(the entry process, outside the replica; the session server, its child, inside)."""
    outer = [p for p in children(os.getpid()) if ENTER in cmdline(p)]
    assert len(outer) == 1, outer
    inner = children(outer[0])
    assert len(inner) == 1, inner
    return outer[0], inner[0]


def in_replica(init: int, argv: bytes) -> list[int]:
    """Host pids of the processes in the replica of `init` whose command line is `argv`."""
    ns = pid_ns(init)
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and cmdline(int(p)) == argv:
            with contextlib.suppress(OSError):
                if pid_ns(int(p)) == ns:
                    found.append(int(p))
    return found


def gone(pid: int, start: int | None) -> bool:
    return bool(process_start_time(pid) != start)


# --- 1. the session's secrets ---------------------------------------------------------------

SCAN = (
    'for p in /proc/[0-9]*; do printf "\\n== %s\\n" "$p"; cat "$p/cmdline"; echo; '
    'cat "$p/environ" 2>&1; done'
)


def test_the_sessions_ticket_and_host_key_are_nowhere_a_replica_can_read(state: Path) -> None:
    keys = Keys()
    script = (
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
        f"({SCAN}) > /tmp/scan.part 2>&1; mv /tmp/scan.part /tmp/scan; exec sleep 300"
    )

    async def scenario() -> dict[str, Any]:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        record = await started(runner, pod("r1", script, {"POD_MARK": "visible-env-42"}))
        out: dict[str, Any] = {}
        async with Relay(keys.ticket) as relay:
            sessions = Sessions(runner, relay.url)
            assert await sessions.open(opening(keys, "r1")) is None
            async with await connect(relay, keys.user) as conn:
                scan = await conn.run(SCAN, encoding=None)
                out["session_scan"] = scan.stdout
                for name, command in {
                    "environ": "cat /proc/$PPID/environ",
                    "mem": "head -c 1 /proc/$PPID/mem",
                    "fd0": "cat /proc/$PPID/fd/0",
                }.items():
                    result = await conn.run(command)
                    out[name] = (result.exit_status, str(result.stderr))
                # The workload's own scan, while the session is open.
                assert (await conn.run("touch /tmp/go")).exit_status == 0
                scan_file = record.path / "tmp" / "scan"
                await until("the workload's scan", scan_file.exists)
                out["workload_scan"] = scan_file.read_bytes()
            await until("the session server to end", lambda: sessions.count() == 0)
            await sessions.close()
        await stopped(runner, "r1")
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 60))
    secrets_ = [keys.ticket.encode(), b"PRIVATE KEY", *keys.host_key_lines()]
    for where in ("session_scan", "workload_scan"):
        scan = out[where]
        # Not vacuous: the scan read the session server's command line and an environment.
        assert ENTER in scan, where
        assert b"POD_MARK=visible-env-42" in scan, where
        for secret in secrets_:
            assert secret not in scan, (where, secret)
    # The session server runs as the replica's uid but is not dumpable by it.
    for name in ("environ", "mem", "fd0"):
        status, stderr = out[name]
        assert status != 0 and "Permission denied" in stderr, (name, status, stderr)


# --- 2. a session ends with its replica -----------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "workload-killed"])
def test_a_replica_that_ends_takes_its_sessions_with_it(state: Path, how: str) -> None:
    keys = Keys()

    async def scenario() -> None:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        record = await started(runner, pod("r1", "exec sleep 311"))
        async with Relay(keys.ticket) as relay:
            sessions = Sessions(runner, relay.url)
            assert await sessions.open(opening(keys, "r1")) is None
            conn = await connect(relay, keys.user)
            try:
                process = await conn.create_process("exec sleep 317")
                sleeps = await until(
                    "the session's sleep", lambda: in_replica(record.pid, b"sleep\x00317\x00")
                )
                workload = in_replica(record.pid, b"sleep\x00311\x00")
                assert len(sleeps) == 1 and len(workload) == 1
                watched = [sleeps[0], *session_servers()]
                starts = {p: process_start_time(p) for p in watched}
                assert all(starts.values()), starts

                if how == "stopped":
                    runner.stop("r1")
                else:
                    os.kill(workload[0], signal.SIGKILL)
                await asyncio.wait_for(record.done.wait(), 10)
                await until(
                    "the session's processes to end",
                    lambda: all(gone(p, s) for p, s in starts.items()),
                    timeout=10,
                )
                await asyncio.wait_for(conn.wait_closed(), 10)
                await asyncio.wait_for(process.wait_closed(), 10)
                assert process.exit_status != 0 or process.exit_signal is not None
                await until("the launcher to forget it", lambda: sessions.count() == 0)
            finally:
                conn.close()
                await sessions.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


# --- 3. a wrong key -------------------------------------------------------------------------


def test_a_wrong_key_is_refused_and_nothing_runs(state: Path) -> None:
    keys = Keys()

    async def scenario() -> None:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        record = await started(runner, pod("r1", "exec sleep 311"))
        async with Relay(keys.ticket) as relay:
            sessions = Sessions(runner, relay.url)
            assert await sessions.open(opening(keys, "r1")) is None
            await until("the dial-back", lambda: not relay.dialed.empty())
            _, server = session_servers()
            with pytest.raises(asyncssh.PermissionDenied):
                conn = await connect(relay, keys.stranger)
                await conn.run("touch /tmp/ran")  # pragma: no cover - only if let in
            # The refused client is gone: so is its session server, having run nothing.
            await until("the session server to end", lambda: sessions.count() == 0)
            assert children(server) == []
            assert not (record.path / "tmp" / "ran").exists()
            assert relay.refused == 0  # the ticket was right: the key was what failed
            await sessions.close()
        await stopped(runner, "r1")

    asyncio.run(asyncio.wait_for(scenario(), 60))


# --- 4. no session for a replica that is not running ----------------------------------------


def test_no_session_server_for_an_unknown_or_exited_replica(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys()
    spawned: list[tuple[Any, ...]] = []
    real = asyncio.create_subprocess_exec

    async def counting(*argv: Any, **kwargs: Any) -> Any:
        spawned.append(argv)
        return await real(*argv, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", counting)

    async def scenario() -> dict[str, str | None]:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        runner.start(pod("done", "exit 0"))
        record = runner.records["done"]
        await asyncio.wait_for(record.done.wait(), 15)
        assert record.exited
        async with Relay(keys.ticket) as relay:
            sessions = Sessions(runner, relay.url)
            reasons = {
                rid: await sessions.open(opening(keys, rid, f"s-{rid}")) for rid in ("nope", "done")
            }
            assert sessions.count() == 0
        return reasons

    reasons = asyncio.run(asyncio.wait_for(scenario(), 60))
    for rid, reason in reasons.items():
        assert reason is not None, rid
        assert reason.strip() and "\n" not in reason, reason
        assert rid in reason and "not running" in reason, reason
    assert [argv for argv in spawned if ENTER.decode() in argv] == []
    assert [p for p in children(os.getpid()) if ENTER in cmdline(p)] == []


# --- 5 and 6. what a session can see of the node --------------------------------------------

LIST = 'for p in /proc/[0-9]*; do read -r line < "$p/stat" && echo "$line"; done; echo "me $PPID"'


def test_a_session_sees_only_its_replicas_processes(state: Path) -> None:
    keys = Keys()

    async def scenario() -> tuple[str, dict[str, int], dict[int, tuple[int, str]]]:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        record = await started(runner, pod("r1", "exec sleep 311"))
        other = await started(runner, pod("r2", "exec sleep 312"))
        host = subprocess.Popen(["sleep", "313"])
        try:
            workload = await until(
                "r1's workload", lambda: in_replica(record.pid, b"sleep\x00311\x00")
            )
            theirs = await until(
                "r2's workload", lambda: in_replica(other.pid, b"sleep\x00312\x00")
            )
            async with Relay(keys.ticket) as relay:
                sessions = Sessions(runner, relay.url)
                assert await sessions.open(opening(keys, "r1")) is None
                async with await connect(relay, keys.user) as conn:
                    listing = str((await conn.run(LIST, check=True)).stdout)
                    _, server = session_servers()
                    # Ours, in their own numbers: init, workload, session server.
                    ours = {
                        "init": inner_pid(record.pid),
                        "workload": inner_pid(workload[0]),
                        "server": inner_pid(server),
                    }
                    kills: dict[int, tuple[int, str]] = {}
                    for pid in (host.pid, theirs[0], other.pid, os.getpid(), 1):
                        result = await conn.run(f"kill -0 {pid}")
                        kills[pid] = (int(result.exit_status or 0), str(result.stderr))
                    # Not vacuous: kill -0 does reach the replica's own workload.
                    own = await conn.run(f"kill -0 {ours['workload']}")
                    assert own.exit_status == 0, own.stderr
                await sessions.close()
        finally:
            host.kill()
            host.wait()
        await stopped(runner, "r1", "r2")
        return listing, ours, kills

    listing, ours, kills = asyncio.run(asyncio.wait_for(scenario(), 60))
    lines = listing.strip().splitlines()
    me = int(lines.pop().split()[1])
    procs: dict[int, tuple[str, int]] = {}
    for line in lines:
        number, rest = line.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        procs[int(number)] = (comm, int(fields.split()[1]))
    assert me == ours["server"]
    assert set(ours.values()) <= set(procs)
    # Everything else is the listing command's own: below the session server.
    for pid in set(procs) - set(ours.values()):
        chain: list[int] = []
        at = pid
        while at in procs and at != me and len(chain) < 10:
            chain.append(at)
            at = procs[at][1]
        assert at == me, (pid, procs)
    assert len(procs) < 10, procs
    # The host's processes and the other replica's (same uid) are out of reach. PID 1 is
    # the replica's own init (root's: EPERM); the others must not exist in its namespace.
    for pid, (status, stderr) in kills.items():
        if pid == 1:
            continue
        assert pid not in procs, (pid, procs)
        assert status != 0 and "No such process" in stderr, (pid, status, stderr)


def test_a_session_cannot_read_the_agents_state(state: Path) -> None:
    keys = Keys()
    node = state / "node.json"
    node.write_text(json.dumps({"token": "node-token-" + secrets.token_hex(8)}))
    node.chmod(0o600)
    mark = "r2-secret-" + secrets.token_hex(8)

    async def scenario() -> dict[str, tuple[int, str]]:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        await started(runner, pod("r1", "exec sleep 311"))
        other = await started(runner, pod("r2", "exec sleep 312", {"R2_SECRET": mark}))
        theirs = other.path / "assignment.json"
        assert mark in theirs.read_text()  # it is there, on the host
        out: dict[str, tuple[int, str]] = {}
        async with Relay(keys.ticket) as relay:
            sessions = Sessions(runner, relay.url)
            assert await sessions.open(opening(keys, "r1")) is None
            async with await connect(relay, keys.user) as conn:
                for name, command in {
                    "node": f"cat {node}",
                    "assignment": f"cat {theirs}",
                    "their_work": f"ls -a {other.path / 'work'}",
                    "listing": f"ls -a {state} {state / 'replicas'}",
                    "grep": f"grep -r {mark} {state}",
                }.items():
                    result = await conn.run(command)
                    text = str(result.stdout) + str(result.stderr)
                    out[name] = (int(result.exit_status or 0), text)
            await sessions.close()
        await stopped(runner, "r1", "r2")
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 60))
    secret_token = json.loads(node.read_text())["token"]
    for name, (_, text) in out.items():
        assert secret_token not in text and mark not in text, (name, text)
    for name in ("node", "assignment", "their_work"):
        status, text = out[name]
        assert status != 0, (name, text)
        assert "No such file" in text or "Permission denied" in text, (name, text)
    # The state directory, in the replica's view, has neither node.json nor r2.
    _, listing = out["listing"]
    assert "node.json" not in listing and "r2" not in listing, listing
