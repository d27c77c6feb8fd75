"""core/pods.py: a pod's state, and when idle stop stops it (pure decisions)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.core.pods import (
    MIN_SESSION_S,
    WARN_BEFORE_S,
    IdleFacts,
    counts_as_activity,
    decide_idle,
    pod_state,
)

IDLE = IdleFacts(
    idle_stop_s=3600.0,
    gpu_threshold=10,
    open_sessions=0,
    last_activity_at=1000.0,
    gpu_util=[0],
    warned_at=None,
)


@pytest.mark.parametrize(
    ("desired", "job", "state"),
    [
        ("running", None, "pending"),
        ("running", "pending", "pending"),
        ("running", "starting", "starting"),
        ("running", "running", "running"),
        ("running", "cancelling", "stopping"),
        ("running", "failed", "failed"),
        ("stopped", "running", "stopping"),
        ("stopped", "cancelled", "stopped"),
        ("stopped", None, "stopped"),
        ("deleted", "cancelling", "stopping"),
    ],
)
def test_a_pods_state_follows_its_run(desired: str, job: str | None, state: str) -> None:
    assert pod_state(desired, job) == state


def test_an_idle_pod_stops_after_idle_stop_and_says_why() -> None:
    assert not decide_idle(IDLE, 1000.0 + 3599).stop
    decision = decide_idle(IDLE, 1000.0 + 3600)
    assert decision.stop and decision.stop_at == 4600.0
    assert "no session for 60 min" in decision.reason and "under 10%" in decision.reason


def test_an_open_session_always_keeps_the_pod() -> None:
    # However long ago the clock started: a logged-in user is never stopped under.
    assert decide_idle(replace(IDLE, open_sessions=1), 10**9) == decide_idle(
        replace(IDLE, idle_stop_s=None), 0
    )
    assert not decide_idle(replace(IDLE, open_sessions=1), 10**9).stop


def test_busy_gpus_keep_the_pod_and_unreported_ones_do_not() -> None:
    assert not decide_idle(replace(IDLE, gpu_util=[0, 55]), 10**9).stop
    assert not decide_idle(replace(IDLE, gpu_util=[11]), 10**9).stop
    assert decide_idle(replace(IDLE, gpu_util=[10]), 10**9).stop  # at the threshold: idle
    assert decide_idle(replace(IDLE, gpu_util=[None]), 10**9).stop


def test_never_means_never() -> None:
    assert decide_idle(replace(IDLE, idle_stop_s=None), 10**12).stop is False


def test_the_warning_comes_once_per_idle_stretch_five_minutes_before() -> None:
    before = 4600.0 - WARN_BEFORE_S
    assert not decide_idle(IDLE, before - 1).warn
    assert decide_idle(IDLE, before).warn
    assert not decide_idle(replace(IDLE, warned_at=before), before + 10).warn
    # A session since then restarted the clock: the next stretch is warned again.
    later = replace(IDLE, last_activity_at=5000.0, warned_at=before)
    assert decide_idle(later, 5000.0 + 3600 - WARN_BEFORE_S).warn


def test_a_short_connection_does_not_reset_the_idle_clock() -> None:
    assert not counts_as_activity(100.0, 100.0 + MIN_SESSION_S - 0.1)
    assert counts_as_activity(100.0, 100.0 + MIN_SESSION_S)
