"""Probes of serving replicas without sockets: the verdicts (pure), the schedule, the status
line, the request, and the Prober's task life against a scripted stand-in for HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.agent import probes
from corral.agent.prober import Prober, Result, request_bytes
from corral.agent.probes import ProbeState, first, news, observe, path, status_code
from corral.agent.records import ReplicaRecord
from corral.wire.agent import Probe, ReplicaAssignment

PROBE = Probe(port=8000, readiness_path="/ready", liveness_path="/live", failure_threshold=3)


def feed(probe: Probe, results: Sequence[bool]) -> tuple[ProbeState, list[bool]]:
    """Run results through the state machine, one period apart; the verdicts reported."""
    state, reported = first(0.0), []
    for ok in results:
        after = observe(probe, state, ok, state.due, state.due + 0.01)
        verdict = news(state, after)
        if verdict is not None:
            reported.append(verdict)
        state = after
    return state, reported


# --- verdicts ---------------------------------------------------------------------------


def test_a_starting_replica_is_unknown_until_its_first_pass_then_ready() -> None:
    state, reported = feed(PROBE, [False, False])
    assert (state.ready, reported) == (None, [])  # fewer failures than the threshold: no news
    state, reported = feed(PROBE, [False, False, True])
    assert (state.ready, reported) == (True, [True])


def test_once_ready_it_takes_threshold_failures_in_a_row_to_become_unready() -> None:
    state, reported = feed(PROBE, [True, False, False, True, False, False])
    assert (state.ready, reported) == (True, [True]), "a pass in between resets the count"
    state, reported = feed(PROBE, [True, False, False, False])
    assert (state.ready, state.failures, reported) == (False, 3, [True, False])
    state, reported = feed(PROBE, [True, False, False, False, False, False])
    assert reported == [True, False], "still failing is no news"


def test_it_recovers_with_one_pass_and_can_fail_again() -> None:
    _, reported = feed(PROBE, [True, False, False, False, True, False, False, False, True])
    assert reported == [True, False, True, False, True]


def test_threshold_failures_before_any_pass_say_unready() -> None:
    # A replica adopted by a restarted agent starts unknown; one that keeps failing must not
    # stay unknown (the server keeps its last verdict over None).
    state, reported = feed(PROBE, [False, False, False])
    assert (state.ready, reported) == (False, [False])
    assert path(PROBE, state) == "/ready", "never passed: still the readiness path"
    _, reported = feed(PROBE, [False, False, False, True])
    assert reported == [False, True]


def test_a_threshold_of_one_reacts_to_the_first_failure() -> None:
    _, reported = feed(PROBE.model_copy(update={"failure_threshold": 1}), [True, False, True])
    assert reported == [True, False, True]


def test_readiness_path_until_the_first_pass_then_liveness_recovery_included() -> None:
    state = first(0.0)
    assert path(PROBE, state) == "/ready"
    state, _ = feed(PROBE, [False, True])
    assert path(PROBE, state) == "/live"
    state, _ = feed(PROBE, [True, False, False, False])
    assert (state.ready, path(PROBE, state)) == (False, "/live")
    no_liveness = PROBE.model_copy(update={"liveness_path": None})
    state, _ = feed(no_liveness, [True])
    assert path(no_liveness, state) == "/ready"


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=5))
def test_the_verdict_is_the_last_pass_unless_threshold_failures_followed_it(
    results: list[bool], threshold: int
) -> None:
    probe = PROBE.model_copy(update={"failure_threshold": threshold})
    state, reported = feed(probe, results)
    passes = [i for i, ok in enumerate(results) if ok]
    trailing = len(results) - (passes[-1] + 1 if passes else 0)
    expected = False if trailing >= threshold else (True if any(results) else None)
    assert state.ready is expected
    assert state.failures == trailing
    assert all(a != b for a, b in itertools.pairwise(reported)), "change only"
    assert (reported[-1] if reported else None) is expected


# --- schedule ---------------------------------------------------------------------------


def test_the_first_probe_is_at_once_then_one_per_period_from_start_to_start() -> None:
    probe = PROBE.model_copy(update={"period_s": 1.0})
    state = first(100.0)
    assert state.due == 100.0
    after = observe(probe, state, True, started=100.0, now=100.3)
    assert after.due == 101.0


def test_a_probe_slower_than_its_period_is_followed_at_once_without_a_burst() -> None:
    probe = PROBE.model_copy(update={"period_s": 1.0, "timeout_s": 5.0})
    after = observe(probe, first(100.0), False, started=100.0, now=105.0)
    assert after.due == 105.0


# --- HTTP, as bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 204\r\n", 204),
        (b"HTTP/1.1 503 Service Unavailable\r\n", 503),
        (b"HTTP/1.1 200", 200),
        (b"", None),
        (b"SSH-2.0-OpenSSH_9.6\r\n", None),
        (b"HTTP/1.1 2000 OK\r\n", None),
        (b"HTTP/1.1 OK 200\r\n", None),
        (b"HTTP/2 200\r\n", None),
    ],
)
def test_the_status_code_is_read_from_the_status_line_only(line: bytes, code: int | None) -> None:
    assert status_code(line) == code


@pytest.mark.parametrize(("code", "ok"), [(199, False), (200, True), (299, True), (301, False)])
def test_only_2xx_passes(code: int, ok: bool) -> None:
    assert probes.is_success(code) is ok


def test_the_request_is_a_minimal_get_and_cannot_be_split() -> None:
    assert request_bytes(8000, "/health?full=1").startswith(
        b"GET /health?full=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    )
    assert request_bytes(8000, "health").startswith(b"GET /health HTTP/1.1\r\n")
    injected = request_bytes(8000, "/h x\r\nEvil: 1")
    assert injected.startswith(b"GET /h%20x%0D%0AEvil:%201 HTTP/1.1\r\n")
    assert injected.endswith(b"Connection: close\r\n\r\n") and b"\r\nEvil" not in injected


# --- the Prober's tasks, with a scripted stand-in for HTTP ------------------------------


def serving(tmp_path: Path, probe: Probe | None, rid: str = "r1") -> ReplicaRecord:
    assignment = ReplicaAssignment(
        replica_id=rid,
        job="ep",
        workspace="default",
        attempt=1,
        rank=0,
        argv=["serve"],
        env={},
        probe=probe,
    )
    return ReplicaRecord(replica_id=rid, path=tmp_path, assignment=assignment, pid=1)


class Scripted:
    """Answers probes from a list of results (repeating the last); records the paths asked."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, port: int, path: str, timeout_s: float) -> Result:
        self.asked.append(path)
        ok = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        await asyncio.sleep(0)
        return Result(ok, "200" if ok else "503")


FAST = Probe(port=9, readiness_path="/ready", liveness_path="/live", period_s=0.01)


async def until(what: str, check: Callable[[], object]) -> None:
    try:
        async with asyncio.timeout(5):
            while not check():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_the_prober_reports_changes_only_and_ends_when_the_replica_is_stopped(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        changes: list[tuple[str, bool | None]] = []
        record = serving(tmp_path, FAST)
        http = Scripted(False, True, True, False, False, False, True)
        prober = Prober(lambda rid: changes.append((rid, record.ready)), get=http)
        prober.watch(record)
        prober.watch(record)  # a second look starts nothing new
        await until("ready, unready, ready", lambda: len(changes) == 3)
        assert changes == [("r1", True), ("r1", False), ("r1", True)]
        assert http.asked[:3] == ["/ready", "/ready", "/live"]
        assert record.report().ready is True
        record.stopping = True  # the runner's stop: no probe after this
        await until("the probe task to end", lambda: not prober.probing)
        asked = len(http.asked)
        await asyncio.sleep(0.05)
        assert len(http.asked) == asked and len(changes) == 3

    asyncio.run(body())


def test_the_prober_ends_at_exit_and_ignores_replicas_without_a_probe(tmp_path: Path) -> None:
    async def body() -> None:
        changes: list[str] = []
        prober = Prober(changes.append, get=Scripted(True))
        plain = serving(tmp_path, None, "plain")
        prober.watch(plain)
        assert prober.probing == frozenset()
        assert plain.report().ready is None
        record = serving(tmp_path, FAST)
        prober.watch(record)
        await until("ready", lambda: record.ready)
        record.take_exit({"exit_code": 0})
        prober.watch(record)  # what the agent does on the runner's exit change
        await until("the probe task to end", lambda: not prober.probing)
        assert changes == ["r1"]
        assert record.report().ready is False, "an exited serving replica is not ready"
        prober.close()

    asyncio.run(body())


def test_a_slow_probe_holds_up_no_other_replica(tmp_path: Path) -> None:
    async def body() -> None:
        async def get(port: int, path: str, timeout_s: float) -> Result:
            if port == 1:
                await asyncio.sleep(3600)  # never answers (http_get's timeout is not tested here)
            return Result(True, "200")

        stuck = serving(tmp_path, FAST.model_copy(update={"port": 1}), "stuck")
        fine = serving(tmp_path, FAST, "fine")
        prober = Prober(lambda _rid: None, get=get)
        prober.watch(stuck)
        prober.watch(fine)
        await until("the healthy replica ready", lambda: fine.ready)
        assert stuck.ready is None
        prober.close()
        await asyncio.sleep(0)
        assert prober.probing == frozenset()

    asyncio.run(body())
