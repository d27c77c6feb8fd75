"""The endpoint autoscaler on load traces: step, spike, ramp down, idle → zero, zero → one."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.autoscale import (
    AutoscalePolicy,
    AutoscaleState,
    LoadSample,
    ScaleDecision,
    decide,
)

Load = Callable[[float], float]


def run(
    policy: AutoscalePolicy,
    load: Load,
    until: float,
    *,
    start: int | None = None,
    step: float = 1.0,
    ready_delay: float = 0.0,
) -> list[tuple[float, ScaleDecision]]:
    """Drive the autoscaler once per `step` seconds; replicas become ready after a delay."""
    state = AutoscaleState.initial(policy, 0.0, start)
    history: list[tuple[float, int]] = [(float("-inf"), state.desired)]
    out: list[tuple[float, ScaleDecision]] = []
    t = step
    while t <= until + 1e-9:
        ready = [d for at, d in history if at <= t - ready_delay][-1]
        level = load(t)
        sample = LoadSample(at=t, in_flight=level, arrivals=1 if level > 0 else 0)
        decision = decide(policy, state, t, ready, sample)
        state = decision.state
        if history[-1][1] != decision.desired:
            history.append((t, decision.desired))
        out.append((t, decision))
        t += step
    return out


def desired_at(trace: list[tuple[float, ScaleDecision]], t: float) -> int:
    return next(d.desired for at, d in trace if at >= t - 1e-9)


def changes(trace: list[tuple[float, ScaleDecision]]) -> int:
    counts = [d.desired for _, d in trace]
    return sum(1 for a, b in itertools.pairwise(counts) if a != b)


POLICY = AutoscalePolicy(
    target_in_flight=2.0,
    min_replicas=0,
    max_replicas=10,
    stable_window_s=60,
    panic_window_s=6,
    scale_to_zero_after_s=120,
)


def test_steady_load_settles_on_load_over_target() -> None:
    trace = run(POLICY, lambda t: 6.0, 200, start=3)
    assert {d.desired for _, d in trace} == {3}
    assert not any(d.panicking for _, d in trace)


def test_step_up_panics_and_scales_within_seconds() -> None:
    # 2 replicas at 4 in flight, then a step to 20: 10 replicas' worth.
    trace = run(POLICY, lambda t: 4.0 if t < 100 else 20.0, 140, start=2)
    assert desired_at(trace, 99) == 2
    assert desired_at(trace, 102) >= 5  # the panic average sees the step within seconds
    assert desired_at(trace, 106) == 10
    assert any(d.panicking for at, d in trace if 100 <= at <= 106)


def test_spike_never_scales_down_while_panicking_then_steps_down_once() -> None:
    trace = run(POLICY, lambda t: 24.0 if 100 <= t < 103 else 2.0, 400, start=1)
    peak = max(d.desired for _, d in trace)
    assert peak >= 5
    peak_at = next(at for at, d in trace if d.desired == peak)
    during = [d.desired for at, d in trace if peak_at <= at < 160]  # panic lasts 60 s
    assert during == sorted(during, reverse=True) and min(during) == peak
    after = [d.desired for at, d in trace if at >= peak_at]
    # Down only, never back up: no flapping.
    assert after == sorted(after, reverse=True)
    assert desired_at(trace, 400) == 1


def test_ramp_down_waits_a_stable_window_and_never_goes_up() -> None:
    def ramp(t: float) -> float:
        return max(2.0, 20.0 - t * 0.1)

    trace = run(POLICY, ramp, 400, start=10)
    counts = [d.desired for _, d in trace]
    assert counts == sorted(counts, reverse=True)
    assert desired_at(trace, 59) == 10  # nothing below the window's peak yet
    assert desired_at(trace, 400) == 1


def test_idle_scales_to_zero_exactly_after_scale_to_zero_after() -> None:
    trace = run(POLICY, lambda t: 2.0 if t <= 30 else 0.0, 300, start=1)
    assert desired_at(trace, 149) == 1  # last traffic at 30 s, +120 s is 150 s
    assert desired_at(trace, 150) == 0
    zero = next(d for at, d in trace if d.desired == 0)
    assert "scaling to zero" in zero.reason


def test_min_replicas_keeps_a_floor_when_idle() -> None:
    policy = AutoscalePolicy(target_in_flight=2, min_replicas=2, max_replicas=5)
    trace = run(policy, lambda t: 0.0, 600, start=2)
    assert {d.desired for _, d in trace} == {2}


def test_zero_to_one_on_the_first_request() -> None:
    state = AutoscaleState.initial(POLICY, 0.0)
    assert state.desired == 0
    idle = decide(POLICY, state, 10.0, ready=0, sample=LoadSample(at=10.0, in_flight=0.0))
    assert idle.desired == 0
    woken = decide(
        POLICY, idle.state, 11.0, ready=0, sample=LoadSample(at=11.0, in_flight=0.2, held=1)
    )
    assert woken.desired == 1
    assert woken.panicking  # no capacity at all: stay up for at least a window


def test_zero_to_many_when_many_are_held() -> None:
    state = AutoscaleState.initial(POLICY, 0.0)
    woken = decide(POLICY, state, 1.0, ready=0, sample=LoadSample(at=1.0, in_flight=9, held=9))
    assert woken.desired == 5


def test_held_request_alone_wakes_even_with_no_average_yet() -> None:
    state = AutoscaleState.initial(POLICY, 0.0)
    woken = decide(POLICY, state, 1.0, ready=0, sample=LoadSample(at=1.0, in_flight=0, held=1))
    assert woken.desired == 1


def test_max_replicas_caps_and_says_so() -> None:
    policy = AutoscalePolicy(target_in_flight=1, max_replicas=3)
    trace = run(policy, lambda t: 50.0, 20, start=1)
    assert {d.desired for _, d in trace[1:]} == {3}
    assert "max_replicas=3" in trace[-1][1].reason


def test_noise_around_a_boundary_does_not_flap() -> None:
    # 3.6..4.4 in flight at target 2: the stable average sits at the 2/3 boundary.
    def noisy(t: float) -> float:
        return 4.0 + (0.4 if int(t) % 2 else -0.4)

    trace = run(POLICY, noisy, 600, start=2)
    assert changes(trace) <= 1


def test_no_sample_keeps_the_count_and_ages_out_old_samples() -> None:
    state = AutoscaleState.initial(POLICY, 0.0, 4)
    busy = decide(POLICY, state, 1.0, ready=4, sample=LoadSample(at=1.0, in_flight=8))
    assert busy.desired == 4
    later = decide(POLICY, busy.state, 500.0, ready=4)
    assert later.state.samples == ()


def test_slow_readiness_does_not_overshoot() -> None:
    # Replicas take 30 s to become ready; the count must not climb past what load needs.
    trace = run(POLICY, lambda t: 0.0 if t < 10 else 8.0, 200, start=0, ready_delay=30)
    assert max(d.desired for _, d in trace) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_in_flight": 0}, "target_in_flight"),
        ({"target_in_flight": 1, "min_replicas": 3, "max_replicas": 2}, "min_replicas"),
        ({"target_in_flight": 1, "panic_window_s": 90}, "panic_window_s"),
        ({"target_in_flight": 1, "panic_threshold": 1}, "panic_threshold"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoscalePolicy(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    loads=st.lists(st.floats(min_value=0, max_value=60), min_size=5, max_size=80),
    min_replicas=st.integers(0, 3),
    extra=st.integers(0, 6),
)
def test_invariants_on_random_traces(loads: list[float], min_replicas: int, extra: int) -> None:
    policy = AutoscalePolicy(
        target_in_flight=3, min_replicas=min_replicas, max_replicas=min_replicas + extra + 1
    )
    state = AutoscaleState.initial(policy, 0.0)
    previous = state.desired
    for i, level in enumerate(loads):
        t = float(i * 2 + 1)
        d = decide(policy, state, t, ready=previous, sample=LoadSample(at=t, in_flight=level))
        assert policy.min_replicas <= d.desired <= policy.max_replicas
        if d.panicking:
            assert d.desired >= previous
        if level > 0:
            assert d.desired >= 1
        state, previous = d.state, d.desired
