"""Training progress: a workload reports steps with corral.train, the agent reads its
progress.json and sends them to the control plane in replica reports."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_channel import (
    WAIT_FOR_GO,
    assignment,
    config,
    control_plane,
    run,
    running,
    until,
)

from corral.agent.daemon import Agent
from corral.agent.records import ReplicaRecord, load_record
from corral.agent.runner import Runner
from corral.wire.agent import (
    AgentMessage,
    Desired,
    Hello,
    LogChunk,
    ReplicaReport,
    Welcome,
)

PY = shlex.quote(sys.executable)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for shim in tmp_path.glob("replicas/*/shim.json"):  # replicas outlive agents by design
        with contextlib.suppress(OSError):
            os.killpg(json.loads(shim.read_text())["pgid"], signal.SIGKILL)


def report(step: int, checkpoint: int | None = None) -> str:
    """A shell line that reports through the real SDK, as a training script would."""
    args = f"{step}" if checkpoint is None else f"{step}, checkpoint_step={checkpoint}"
    return f"{PY} -c 'import corral.train as t; t.report({args})'"


def wait_for(name: str) -> str:
    return f"while [ ! -e {name} ]; do sleep 0.02; done"


def test_the_workload_is_told_where_to_report_and_the_record_reads_it(state: Path) -> None:
    script = f'echo "$CORRAL_PROGRESS_FILE"; {report(3, 2)}; {report(4)}'

    async def body() -> ReplicaRecord:
        runner = Runner(state)
        runner.load()
        # An assignment cannot point the file elsewhere: the agent reads this one.
        runner.start(assignment("r1", script, env={"CORRAL_PROGRESS_FILE": "/tmp/elsewhere"}))
        record = runner.records["r1"]
        await record.done.wait()
        runner.close()
        return record

    record = run(body())
    replica = state / "replicas" / "r1"
    assert record.exit_code == 0, (replica / "output.log").read_text()
    assert (replica / "output.log").read_text() == f"{replica / 'status' / 'progress.json'}\n"
    reloaded = load_record(replica)  # a restarted agent knows the progress too
    report_ = reloaded.report()
    assert (report_.step, report_.checkpoint_step) == (4, 2)
    progress = json.loads((replica / "status" / "progress.json").read_text())
    assert report_.progress_at == progress["time"]


def test_unreadable_or_ill_typed_progress_is_ignored(tmp_path: Path) -> None:
    record = ReplicaRecord(replica_id="r1", path=tmp_path)
    progress = tmp_path / "progress.json"
    for junk in (
        "{",
        "[]",
        '{"step": -1}',
        '{"step": true}',
        '{"step": 1, "checkpoint_step": "x"}',
    ):
        progress.write_text(junk)
        assert not record.read_progress()
    assert record.report().step is None
    progress.write_text('{"step": 5, "checkpoint_step": null, "time": 12.5}')
    assert record.read_progress()
    taken = record.report()
    assert (taken.step, taken.checkpoint_step, taken.progress_at) == (5, None, 12.5)
    assert not record.read_progress(), "the same step again is no news"


def test_progress_is_never_read_through_a_symlink(tmp_path: Path) -> None:
    # A confined workload owns status/: it must not make the agent read another file.
    secret = tmp_path / "secret.json"
    secret.write_text('{"step": 9, "checkpoint_step": 9}')
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "progress.json").symlink_to(secret)
    record = ReplicaRecord(replica_id="r1", path=tmp_path)
    assert not record.read_progress()
    assert record.report().step is None


def test_progress_reaches_the_control_plane_coalesced_and_with_the_exit(state: Path) -> None:
    tight_loop = f"{PY} -c 'import corral.train as t\nfor i in range(1, 301): t.report(i)'"
    script = (
        f"{wait_for('s1')}; {report(1)}; {wait_for('s2')}; {report(2, 2)}; "
        f"{wait_for('s3')}; {tight_loop}; {WAIT_FOR_GO}; exit 0"
    )

    async def body() -> None:
        async with control_plane() as cp:
            agent = Agent(config(cp, state, progress_poll_s=0.05))
            async with running(agent):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                await conn.send(Desired(replicas=[assignment("r1", script)]))
                first = await conn.expect(ReplicaReport)
                assert (first.phase, first.step) == ("running", None)
                work = state / "replicas" / "r1" / "work"

                async def next_report() -> ReplicaReport:
                    while True:
                        message: AgentMessage = await conn.next()
                        if isinstance(message, ReplicaReport):
                            return message
                        assert isinstance(message, LogChunk)

                (work / "s1").touch()
                one = await next_report()
                assert (one.phase, one.step, one.checkpoint_step) == ("running", 1, None)
                assert one.progress_at is not None
                (work / "s2").touch()
                two = await next_report()
                assert (two.step, two.checkpoint_step) == (2, 2)

                (work / "s3").touch()
                seen: list[int] = []
                while not seen or seen[-1] != 300:
                    r = await next_report()
                    assert r.phase == "running" and r.step is not None
                    seen.append(r.step)
                    assert r.checkpoint_step == 2, "a step without a checkpoint keeps the last"
                assert seen == sorted(seen)
                assert len(seen) < 100, "one report per poll, not one per step"

                (work / "go").touch()
                last = await next_report()
                assert (last.phase, last.exit_code, last.step, last.checkpoint_step) == (
                    "exited",
                    0,
                    300,
                    2,
                )

    run(body())


def test_a_reconnecting_agent_says_the_latest_progress_in_its_hello(state: Path) -> None:
    script = f"{report(7, 5)}; {WAIT_FOR_GO}"

    async def body() -> None:
        async with control_plane() as cp:
            # Polled rarely: the step must come with the hello, not with a later poll.
            agent = Agent(config(cp, state, progress_poll_s=3600))
            async with running(agent):
                conn = await cp.next_connection()
                await conn.expect(Hello)
                await conn.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                await conn.send(Desired(replicas=[assignment("r1", script)]))
                await conn.expect(ReplicaReport)
                progress = state / "replicas" / "r1" / "status" / "progress.json"
                await until("the replica's first report", progress.exists)
                await conn.ws.close(code=1012)
                again = await cp.next_connection()
                hello = await again.expect(Hello)
                [r] = hello.replicas
                assert (r.phase, r.step, r.checkpoint_step) == ("running", 7, 5)
                await again.send(Welcome(node_id="n-1", heartbeat_interval_s=1))
                (state / "replicas" / "r1" / "work" / "go").touch()

    run(body())


def test_progress_nested_deep_enough_to_overflow_the_parser_is_ignored(tmp_path: Path) -> None:
    # Written by the workload: it must not crash the agent (now or at its next start).
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "progress.json").write_text("[" * 5000)
    record = ReplicaRecord(replica_id="r1", path=tmp_path)
    assert not record.read_progress()
    (tmp_path / "status" / "progress.json").write_text('{"step": ' + "9" * 4000 + "}")
    assert not record.read_progress()
    assert record.report().step is None
