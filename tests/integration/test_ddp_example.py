"""examples/ddp.py as two real processes on loopback (gloo, no corral server): it trains,
checkpoints, resumes exactly after a kill, fails on a script error and hangs on demand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import torch  # noqa: F401 - the example needs it: fail here, not in a subprocess

from corral.spec.loader import load_job_spec
from support.cluster import free_port

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPT = EXAMPLES / "ddp.py"
STEPS = 40
EVERY = 10


def until(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Rank:
    rank: int
    proc: subprocess.Popen[bytes]
    log: Path
    progress: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reported(self) -> dict[str, int | None]:
        try:
            value = json.loads(self.progress.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        assert isinstance(value, dict)
        return value

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rank {self.rank} still running:\n{self.output()}") from None


class Run:
    """One attempt: `world` ranks of the example, each in its own process group."""

    def __init__(self, tmp: Path, checkpoints: Path, name: str, *args: str, world: int = 2):
        port = free_port()
        self.ranks: list[Rank] = []
        for rank in range(world):
            log = tmp / f"{name}-rank{rank}.log"
            progress = tmp / f"{name}-progress{rank}.json"
            env = {
                **os.environ,
                # What corral sets (server/services/assignments.py), one process per replica.
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NNODES": str(world),
                "NODE_RANK": str(rank),
                "NPROC_PER_NODE": "1",
                "WORLD_SIZE": str(world),
                "RANK": str(rank),
                "LOCAL_RANK": "0",
                "CORRAL_CHECKPOINT_DIR": str(checkpoints),
                "CORRAL_PROGRESS_FILE": str(progress),  # set by the agent
                "OMP_NUM_THREADS": "1",
            }
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(SCRIPT), "--steps", str(STEPS), *args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.ranks.append(Rank(rank, proc, log, progress))

    def wait(self, timeout: float = 60.0) -> list[int]:
        return [r.wait(timeout) for r in self.ranks]

    def kill(self) -> None:
        for r in self.ranks:
            if r.proc.poll() is None:
                os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait(10)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The checksum of an uninterrupted run: what every recovered run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    run = Run(tmp, tmp / "ckpt", "ref", "--checkpoint-every", str(EVERY))
    try:
        assert run.wait() == [0, 0], run.ranks[0].output() + run.ranks[1].output()
    finally:
        run.kill()
    final = json.loads((tmp / "ckpt" / "final.json").read_text())
    assert (final["step"], final["world_size"]) == (STEPS, 2)
    for r in run.ranks:
        assert r.reported()["step"] == STEPS and r.reported()["checkpoint_step"] == STEPS
        assert f"done: step {STEPS}, checksum {final['checksum']}" in r.output()
    steps = sorted(p.name for p in (tmp / "ckpt").glob("step-*.pt"))
    assert steps == ["step-00000020.pt", "step-00000030.pt", "step-00000040.pt"], "keeps 3"
    return str(final["checksum"])


def test_a_killed_host_resumes_from_the_newest_checkpoint_and_ends_identical(
    tmp_path: Path, runs: list[Run], reference: str
) -> None:
    ckpt = tmp_path / "ckpt"
    first = Run(tmp_path, ckpt, "a1", "--checkpoint-every", str(EVERY), "--step-time", "0.05")
    runs.append(first)
    r0, r1 = first.ranks

    def past_a_checkpoint() -> dict[str, int | None] | None:
        progress = r0.reported()
        return progress if (progress.get("step") or 0) >= EVERY + 3 else None

    at_kill = until("a checkpoint and a few steps more", past_a_checkpoint)
    os.killpg(r1.proc.pid, signal.SIGKILL)  # rank 1's host dies
    assert r0.wait() != 0, "the survivor notices its peer is gone"
    assert at_kill["step"] is not None and at_kill["step"] < STEPS

    second = Run(tmp_path, ckpt, "a2", "--checkpoint-every", str(EVERY))
    runs.append(second)
    assert second.wait() == [0, 0], second.ranks[0].output()
    newest_before = at_kill["checkpoint_step"]
    assert newest_before is not None
    resumed = next(
        int(line.rsplit(" ", 1)[1])
        for line in second.ranks[0].output().splitlines()
        if "resuming from step" in line
    )
    assert resumed >= newest_before and resumed % EVERY == 0
    assert at_kill["step"] - resumed <= EVERY + 3, "at most a checkpoint interval is redone"
    final = json.loads((ckpt / "final.json").read_text())
    assert (final["step"], final["checksum"]) == (STEPS, reference)
    assert not list(ckpt.glob(".*.tmp")), "no temporary left behind by a finished save"


def test_an_incomplete_checkpoint_is_never_resumed_from(
    tmp_path: Path, runs: list[Run], reference: str
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    # What a save killed mid-write leaves: a temporary, never renamed into place.
    (ckpt / ".step-00000030.pt.123.tmp").write_bytes(b"half a checkpoint")
    run = Run(tmp_path, ckpt, "b", "--checkpoint-every", str(EVERY))
    runs.append(run)
    assert run.wait() == [0, 0], run.ranks[0].output()
    assert "starting from scratch" in run.ranks[0].output()
    assert json.loads((ckpt / "final.json").read_text())["checksum"] == reference


def test_a_script_error_fails_every_rank_with_its_traceback(
    tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(tmp_path, tmp_path / "ckpt", "c", "--fail-at-step", "5")
    runs.append(run)
    codes = run.wait()
    assert all(code != 0 for code in codes)
    for r in run.ranks:
        assert "RuntimeError: injected failure at step 5" in r.output()
        assert r.reported()["step"] == 4


def test_a_hung_rank_lives_without_progress_and_a_restart_gets_past_it(
    tmp_path: Path, runs: list[Run], reference: str
) -> None:
    ckpt = tmp_path / "ckpt"
    hang = ["--checkpoint-every", str(EVERY), "--hang-at-step", "15", "--hang-rank", "1"]
    first = Run(tmp_path, ckpt, "d1", *hang)
    runs.append(first)
    until("rank 1 to hang", (ckpt / "hang-at-15.done").exists)
    until("rank 1 to report its last step", lambda: first.ranks[1].reported().get("step") == 14)
    assert [r.proc.poll() for r in first.ranks] == [None, None], "alive, making no progress"
    assert "hanging at step 15" in first.ranks[1].output()
    first.kill()  # what corral does once progress_timeout passes

    second = Run(tmp_path, ckpt, "d2", *hang)
    runs.append(second)
    assert second.wait() == [0, 0], second.ranks[1].output()
    assert "resuming from step 10" in second.ranks[0].output()
    assert json.loads((ckpt / "final.json").read_text())["checksum"] == reference


def test_the_yaml_ships_exactly_the_example_script() -> None:
    spec = load_job_spec(EXAMPLES / "ddp.yaml")
    assert spec.files["ddp.py"] == SCRIPT.read_text(), "regenerate examples/ddp.yaml"
    assert spec.replicas == 2 and spec.max_restarts >= 1
