"""Sessions.open into a real confined replica (root, as on a real node): the session server
runs inside it, as its user, with its environment, its processes, its /tmp, its directory."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from corral.agent.runner import Runner
from corral.agent.sandbox.plan import workload_uid
from corral.agent.sandbox.policy import Isolation
from corral.agent.sessions.launch import Sessions
from corral.wire.agent import ReplicaAssignment
from corral.wire.sessions import OpenSession
from support.session_relay import TICKET, Keys, Relay

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="confinement is Linux's")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_agent_runner import kill_leftovers

    kill_leftovers(tmp_path)


def pod(rid: str, script: str, env: dict[str, str]) -> ReplicaAssignment:
    return ReplicaAssignment(
        replica_id=rid,
        job="dev",
        workspace="team-a",
        attempt=1,
        rank=0,
        argv=["sh", "-c", script],
        env=env,
        uid_index=7,
    )


async def until(what: str, probe: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def opening(keys: Any, rid: str, sid: str = "s1") -> OpenSession:
    return OpenSession(
        session_id=sid,
        ticket=TICKET,
        replica_id=rid,
        authorized_keys=[keys.user.export_public_key().decode()],
        host_key=keys.host.export_private_key().decode(),
        who="alice",
    )


async def connect(relay: Any, keys: Any) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        relay.port,
        username="alice",
        client_keys=[keys.user],
        known_hosts=None,
        agent_path=None,
    )


def test_a_session_runs_inside_the_confined_replica(state: Path) -> None:
    keys = Keys(
        host=asyncssh.generate_private_key("ssh-ed25519"),
        user=asyncssh.generate_private_key("ssh-ed25519"),
    )
    env = {"CUDA_VISIBLE_DEVICES": "1,3", "POD_MARK": "from-the-assignment"}
    script = "echo private > /tmp/replica-only; exec sleep 300"

    async def scenario() -> dict[str, str]:
        runner = Runner(state, isolation=Isolation(state_dir=state), stop_grace_s=1)
        runner.load()
        runner.start(pod("r1", script, env))
        record = runner.records["r1"]
        await until("the replica to run", lambda: record.pid is not None)
        await until("its /tmp file", lambda: (record.path / "tmp" / "replica-only").exists())
        async with Relay() as relay:
            sessions = Sessions(runner, relay.url)
            assert await sessions.open(opening(keys, "nope")) == (
                "replica nope is not running on this node"
            )
            assert await sessions.open(opening(keys, "r1")) is None
            assert sessions.count() == 1
            out: dict[str, str] = {}
            async with await connect(relay, keys) as conn:
                for name, command in {
                    "uid": "id -u",
                    "groups": "id -G",
                    "env": 'echo "$CUDA_VISIBLE_DEVICES $POD_MARK $USER"',
                    "procs": "ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/1/cmdline",
                    "tmp": "cat /tmp/replica-only",
                    "pwd": "pwd",
                }.items():
                    result = await conn.run(command)
                    assert result.exit_status == 0, (name, result.stderr)
                    out[name] = str(result.stdout).strip()
            await until("the session server to end", lambda: sessions.count() == 0)
            await sessions.close()
        runner.stop("r1")
        await asyncio.wait_for(record.done.wait(), 10)
        out["work"] = str(record.path / "work")
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 90))
    uid = workload_uid(Isolation(state_dir=state).uid_base, 7)
    assert out["uid"] == str(uid)
    assert out["groups"] == str(uid)
    assert out["env"] == "1,3 from-the-assignment corral-team-a"
    # The replica's init (PID 1: sh's parent), the workload, the session server, and the
    # command's own few processes: nothing of the host's hundreds.
    count, init = out["procs"].split("\n", 1)
    assert int(count) < 10
    assert "corral.agent.sandbox.init" in init
    assert out["tmp"] == "private"
    assert out["pwd"] == out["work"]
