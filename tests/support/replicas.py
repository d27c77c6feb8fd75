"""Running replicas through a Runner in a test, one after the other, and reading what they
left: the pieces the agent's security and volume tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from corral.agent.runner import Runner
from corral.wire.agent import ReplicaAssignment

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def kill_leftovers(state_dir: Path) -> None:
    """Replicas outlive runners by design: kill whatever a failed test left behind."""
    for shim in state_dir.glob("replicas/*/shim.json"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(json.loads(shim.read_text())["pgid"], signal.SIGKILL)


def replica(
    rid: str, workspace: str, uid_index: int, script: str, *, job: str = "dev", **extra: Any
) -> ReplicaAssignment:
    """A one-replica assignment running `sh -c script` as workspace `uid_index`'s user."""
    return ReplicaAssignment(
        replica_id=rid,
        job=job,
        workspace=workspace,
        attempt=extra.pop("attempt", 1),
        rank=0,
        argv=["sh", "-c", script],
        env={},
        uid_index=uid_index,
        **extra,
    )


def run_all(runner: Runner, *assignments: ReplicaAssignment) -> None:
    """Run each replica to its end, one after the other (like stop/start of a pod)."""

    async def body() -> None:
        runner.load()
        for a in assignments:
            assert runner.start(a)
            await asyncio.wait_for(runner.records[a.replica_id].done.wait(), 20)
        runner.close()

    run(body())


def log(state: Path, rid: str) -> str:
    return (state / "replicas" / rid / "output.log").read_text()
