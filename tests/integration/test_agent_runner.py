"""The runner with real processes: shims, process groups, adoption by a restarted agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from corral.agent.runner import SHIM_VANISHED, Runner
from corral.wire.agent import ReplicaAssignment

T = TypeVar("T")
WAIT_FOR = "while [ ! -e go ]; do sleep 0.02; done"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(what: str, probe: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll `probe` until it returns something truthy, failing with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(state_dir: Path) -> None:
    """Replicas outlive runners by design: kill whatever a failed test left behind."""
    for shim in state_dir.glob("replicas/*/shim.json"):
        info = json.loads(shim.read_text())
        with contextlib.suppress(OSError):
            os.killpg(info["pgid"], signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(info["shim_pid"], signal.SIGKILL)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_leftovers(tmp_path)


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


async def finished(runner: Runner, rid: str) -> None:
    await asyncio.wait_for(runner.records[rid].done.wait(), 10)


def work(state: Path, rid: str) -> Path:
    return state / "replicas" / rid / "work"


def test_a_replica_runs_under_a_shim_with_its_env_files_and_exit_code(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_JOIN_TOKEN", "crj_secret")  # the agent's, not the workload's
    monkeypatch.setenv("AGENT_ONLY", "inherited")
    script = (
        'echo out; echo err >&2; echo "$FOO $CUDA_VISIBLE_DEVICES $AGENT_ONLY"; '
        'echo "${CORRAL_JOIN_TOKEN-unset}"; cat data/in.txt; pwd; exit 3'
    )

    async def body() -> None:
        runner = Runner(state)
        runner.load()
        a = assignment(
            "r1",
            script,
            env={"FOO": "bar", "CUDA_VISIBLE_DEVICES": "2,3"},
            files={"data/in.txt": "payload\n"},
        )
        assert runner.start(a)
        await finished(runner, "r1")
        record = runner.records["r1"]
        assert (record.exit_code, record.error) == (3, None)
        assert record.pid is not None and record.started_at is not None
        runner.close()

    run(body())
    replica = state / "replicas" / "r1"
    assert json.loads((replica / "exit.json").read_text())["exit_code"] == 3
    shim = json.loads((replica / "shim.json").read_text())
    assert shim["pgid"] == shim["pid"] != shim["shim_pid"] != os.getpid()
    assert (replica / "output.log").read_text() == (
        f"out\nerr\nbar 2,3 inherited\nunset\npayload\n{replica / 'work'}\n"
    )


def test_a_command_that_cannot_be_found_exits_127_with_the_reason(state: Path) -> None:
    async def body() -> None:
        runner = Runner(state)
        runner.load()
        a = assignment("r1", "")
        runner.start(a.model_copy(update={"argv": ["/no/such/program", "x"]}))
        await finished(runner, "r1")
        report = runner.records["r1"].report()
        assert report.phase == "exited" and report.exit_code == 127
        assert report.error and "/no/such/program" in report.error
        assert report.log_bytes == len((state / "replicas/r1/output.log").read_bytes()) > 0

    run(body())
    assert "No such file or directory" in (state / "replicas/r1/output.log").read_text()


def test_stop_kills_the_whole_process_group_grandchildren_included(state: Path) -> None:
    async def body() -> None:
        runner = Runner(state, stop_grace_s=5)
        runner.load()
        runner.start(assignment("r1", "sleep 1000 & echo $! > child.pid; sleep 1000"))
        child_pid = work(state, "r1") / "child.pid"
        await until("the grandchild's pid", lambda: child_pid.exists() and child_pid.read_text())
        record = runner.records["r1"]
        await until("the replica running", lambda: record.pid)
        assert record.pid is not None
        pids = [record.pid, int(child_pid.read_text())]
        runner.stop("r1")
        await finished(runner, "r1")
        assert record.exit_code == 143  # SIGTERM was enough
        await until("every process of the group gone", lambda: all(gone(p) for p in pids))

    run(body())


def test_a_workload_ignoring_sigterm_is_killed_after_the_grace(state: Path) -> None:
    async def body() -> None:
        runner = Runner(state, stop_grace_s=0.3)
        runner.load()
        runner.start(assignment("r1", "trap '' TERM; sleep 1000 & echo ok > up; wait"))
        await until("the trap set", lambda: (work(state, "r1") / "up").exists())
        runner.stop("r1")
        await finished(runner, "r1")
        assert runner.records["r1"].exit_code == 137

    run(body())


def test_a_new_runner_adopts_a_running_replica_and_sees_its_exit(state: Path) -> None:
    changes: list[str] = []

    async def body() -> None:
        first = Runner(state)
        first.load()
        first.start(assignment("r1", f"{WAIT_FOR}; exit 4"))
        await until("the replica running", lambda: first.records["r1"].pid)
        pid = first.records["r1"].pid
        first.close()  # the agent goes away; the replica must not notice

        second = Runner(state, on_change=changes.append)
        second.load()
        record = second.records["r1"]
        assert (record.state, record.pid) == ("running", pid)
        assert record.assignment is not None and record.assignment.job == "train"
        (work(state, "r1") / "go").touch()
        await finished(second, "r1")
        assert record.exit_code == 4
        assert changes == ["r1"]
        second.close()

    run(body())


def test_an_adopted_replica_can_be_stopped(state: Path) -> None:
    async def body() -> None:
        first = Runner(state)
        first.load()
        first.start(assignment("r1", "sleep 1000"))
        await until("the replica running", lambda: first.records["r1"].pid)
        first.close()
        second = Runner(state, stop_grace_s=5)
        second.load()
        second.apply([])  # the server no longer wants it
        await finished(second, "r1")
        assert second.records["r1"].exit_code == 143

    run(body())


def test_an_exit_while_no_runner_watched_is_found_on_adoption(state: Path) -> None:
    async def body() -> None:
        first = Runner(state)
        first.load()
        first.start(assignment("r1", f"echo bye; {WAIT_FOR}; exit 5"))
        await until("the replica running", lambda: first.records["r1"].pid)
        first.close()
        (work(state, "r1") / "go").touch()
        exit_file = state / "replicas/r1/exit.json"
        await until("the shim to record the exit", exit_file.exists)

        second = Runner(state)
        second.load()
        report = second.records["r1"].report()  # settled by load itself: no waiting
        assert (report.phase, report.exit_code, report.log_bytes) == ("exited", 5, 4)

    run(body())


def test_a_known_replica_is_never_started_twice(state: Path) -> None:
    a = assignment("r1", "echo x >> ../../starts")

    async def body() -> None:
        first = Runner(state)
        first.load()
        assert [x.replica_id for x in first.apply([a]).start] == ["r1"]
        await finished(first, "r1")
        assert first.apply([a]).start == ()
        assert not first.start(a)
        second = Runner(state)  # a restarted agent, told to run it again
        second.load()
        assert second.apply([a]).start == ()
        assert not second.start(a)

    run(body())
    assert (state / "replicas" / "starts").read_text() == "x\n"


@pytest.mark.parametrize("adopted", [False, True], ids=["watched", "adopted"])
def test_a_shim_killed_outright_ends_the_replica_with_an_unknown_exit(
    state: Path, adopted: bool
) -> None:
    async def body() -> None:
        runner = Runner(state)
        runner.load()
        runner.start(assignment("r1", "sleep 1000"))
        record = await until(
            "the replica running", lambda: runner.records["r1"].pid and runner.records["r1"]
        )
        assert record.shim_pid is not None and record.pid is not None
        if adopted:
            runner.close()
        os.kill(record.shim_pid, signal.SIGKILL)
        if adopted:
            await until("the shim gone", lambda: gone(record.shim_pid or 0))
            runner = Runner(state)
            runner.load()
        else:
            await finished(runner, "r1")
        report = runner.records["r1"].report()
        assert (report.phase, report.exit_code, report.error) == ("exited", None, SHIM_VANISHED)
        # Nobody could ever wait for the orphaned workload: it was killed.
        await until("the orphaned workload killed", lambda: gone(record.pid or 0))
        assert json.loads((state / "replicas/r1/exit.json").read_text())["error"] == SHIM_VANISHED

    run(body())


def test_stop_right_after_start_waits_for_the_workload_then_stops_it(state: Path) -> None:
    async def body() -> None:
        runner = Runner(state, stop_grace_s=5)
        runner.load()
        runner.start(assignment("r1", "sleep 1000"))
        runner.stop("r1")  # before the shim has even written shim.json
        await finished(runner, "r1")
        assert runner.records["r1"].exit_code == 143

    run(body())
