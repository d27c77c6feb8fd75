"""How many replicas an endpoint should have, from the load it has seen. Pure.

Concurrency-based, after Knative's KPA: the signal is requests in flight (being served or
held by the gateway), the goal `target_in_flight` per replica.

- Two averages over the samples seen: the **stable** window (≈60 s) and the **panic**
  window (≈6 s). Normally the replica count follows the stable average.
- **Panic** starts when the panic average needs at least `panic_threshold` (2x) the ready
  capacity. While panicking the count follows the faster panic average and never goes
  down; panic ends once a whole stable window has passed without a new trigger.
- **Scale down** only to the highest count the stable average asked for over the last
  stable window, and never within a stable window of the last scale-up: a dip and a
  spike in quick succession do not make the count flap.
- **Zero**: with `min_replicas == 0`, no request for `scale_to_zero_after_s` scales to
  zero. From zero, the first sample with any demand asks for a replica at once.

The caller keeps the returned `AutoscaleState` (it is small and frozen) and passes it back
with the next sample; `now` is always handed in. `to_dict`/`from_dict` make it plain JSON,
so the server stores it with the endpoint and a restarted server decides exactly as the
one before it would have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Avoids asking for a third replica when 2 x target comes out as 2.0000000001 x target.
_EPSILON = 1e-9


@dataclass(frozen=True)
class AutoscalePolicy:
    target_in_flight: float
    min_replicas: int = 0
    max_replicas: int = 1
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    scale_to_zero_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.target_in_flight <= 0:
            raise ValueError("target_in_flight must be above 0")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.max_replicas < 1:
            raise ValueError("max_replicas must be at least 1")
        if not 0 < self.panic_window_s <= self.stable_window_s:
            raise ValueError("need 0 < panic_window_s <= stable_window_s")
        if self.panic_threshold <= 1:
            raise ValueError("panic_threshold must be above 1")


@dataclass(frozen=True)
class LoadSample:
    """What the gateways saw over one polling interval, added up over all of them."""

    at: float
    in_flight: float  # time-averaged over the interval, held requests included
    arrivals: int = 0  # requests that arrived during the interval
    held: int = 0  # requests waiting for a replica right now


@dataclass(frozen=True)
class _Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class AutoscaleState:
    desired: int
    samples: tuple[LoadSample, ...] = ()
    recommendations: tuple[_Recommendation, ...] = ()
    panic_until: float | None = None
    last_scale_up_at: float | None = None
    last_traffic_at: float | None = None
    created_at: float = 0.0

    @staticmethod
    def initial(policy: AutoscalePolicy, now: float, replicas: int | None = None) -> AutoscaleState:
        start = policy.min_replicas if replicas is None else replicas
        return AutoscaleState(desired=_clamp(policy, start), created_at=now)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (lists, numbers, None): what the store keeps. Floats survive JSON
        exactly, so `from_dict(to_dict(s)) == s`."""
        return {
            "version": STATE_FORMAT,
            "desired": self.desired,
            "samples": [[s.at, s.in_flight, s.arrivals, s.held] for s in self.samples],
            "recommendations": [[r.at, r.replicas] for r in self.recommendations],
            "panic_until": self.panic_until,
            "last_scale_up_at": self.last_scale_up_at,
            "last_traffic_at": self.last_traffic_at,
            "created_at": self.created_at,
        }

    @staticmethod
    def from_dict(stored: Mapping[str, Any]) -> AutoscaleState:
        """The state `to_dict` wrote; ValueError for anything else (another format, a
        hand-edited row): the caller then starts afresh."""
        if stored.get("version") != STATE_FORMAT:
            raise ValueError(f"not an autoscaler state of format {STATE_FORMAT}")
        try:
            return AutoscaleState(
                desired=_int(stored["desired"]),
                samples=tuple(
                    LoadSample(
                        at=_float(at), in_flight=_float(flight), arrivals=_int(n), held=_int(h)
                    )
                    for at, flight, n, h in stored["samples"]
                ),
                recommendations=tuple(
                    _Recommendation(at=_float(at), replicas=_int(n))
                    for at, n in stored["recommendations"]
                ),
                panic_until=_optional(stored["panic_until"]),
                last_scale_up_at=_optional(stored["last_scale_up_at"]),
                last_traffic_at=_optional(stored["last_traffic_at"]),
                created_at=_float(stored["created_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed autoscaler state: {exc}") from None


STATE_FORMAT = 1


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _optional(value: Any) -> float | None:
    return None if value is None else _float(value)


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    panicking: bool
    reason: str
    state: AutoscaleState = field(repr=False)
    stable_in_flight: float = 0.0
    panic_in_flight: float = 0.0


def _clamp(policy: AutoscalePolicy, replicas: int) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def _average(samples: tuple[LoadSample, ...], since: float) -> float:
    window = [s.in_flight for s in samples if s.at > since]
    return sum(window) / len(window) if window else 0.0


def _replicas_for(policy: AutoscalePolicy, in_flight: float) -> int:
    return math.ceil(in_flight / policy.target_in_flight - _EPSILON)


def decide(
    policy: AutoscalePolicy,
    state: AutoscaleState,
    now: float,
    ready: int,
    sample: LoadSample | None = None,
) -> ScaleDecision:
    """The replica count to run now; `ready` is how many replicas take traffic now."""
    samples = state.samples if sample is None else (*state.samples, sample)
    samples = tuple(s for s in samples if s.at > now - policy.stable_window_s)
    last_traffic = state.last_traffic_at
    if sample is not None and (sample.arrivals > 0 or sample.in_flight > 0 or sample.held > 0):
        last_traffic = sample.at

    stable = _average(samples, now - policy.stable_window_s)
    panic = _average(samples, now - policy.panic_window_s)
    want_stable = _replicas_for(policy, stable)
    want_panic = _replicas_for(policy, panic)
    recent = tuple(r for r in state.recommendations if r.at > now - policy.stable_window_s)
    recommendations = (*recent, _Recommendation(now, want_stable))

    capacity = max(ready, 0) * policy.target_in_flight
    demand_now = sample is not None and (sample.held > 0 or sample.in_flight > 0)
    panic_until = state.panic_until
    if (panic > 0 and panic >= policy.panic_threshold * capacity - _EPSILON) or (
        demand_now and ready == 0
    ):
        panic_until = now + policy.stable_window_s
    panicking = panic_until is not None and now < panic_until
    if not panicking:
        panic_until = None

    current = state.desired
    if panicking:
        desired = max(current, want_panic, want_stable)
        reason = (
            f"panic: {panic:.1f} in flight over {policy.panic_window_s:g} s against "
            f"{ready} ready x {policy.target_in_flight:g}; not scaling down"
        )
    else:
        desired = want_stable
        reason = (
            f"{stable:.1f} in flight over {policy.stable_window_s:g} s, "
            f"target {policy.target_in_flight:g} per replica"
        )
        if desired < current:
            held_up = max(r.replicas for r in recommendations)
            recently_up = (
                state.last_scale_up_at is not None
                and now - state.last_scale_up_at < policy.stable_window_s
            )
            if recently_up:
                desired = current
                reason += "; holding: scaled up less than a stable window ago"
            elif held_up > desired:
                desired = min(current, held_up)
                reason += f"; holding at the window's peak of {held_up}"

    # From zero, one request is reason enough; the averages will catch up.
    if demand_now or (sample is not None and sample.arrivals > 0):
        desired = max(desired, 1)

    # Keep one replica until traffic has been gone for scale_to_zero_after_s.
    idle_since = last_traffic if last_traffic is not None else state.created_at
    if desired == 0 and current > 0 and now - idle_since < policy.scale_to_zero_after_s:
        desired = 1
        reason += f"; keeping 1 until idle for {policy.scale_to_zero_after_s:g} s"
    elif desired == 0 and current > 0:
        reason = f"no traffic for {now - idle_since:.0f} s: scaling to zero"

    clamped = _clamp(policy, desired)
    if clamped != desired:
        bound = "max_replicas" if clamped < desired else "min_replicas"
        reason += f"; limited by {bound}={clamped}"
    last_up = now if clamped > current else state.last_scale_up_at
    new_state = replace(
        state,
        desired=clamped,
        samples=samples,
        recommendations=recommendations,
        panic_until=panic_until,
        last_scale_up_at=last_up,
        last_traffic_at=last_traffic,
    )
    return ScaleDecision(
        desired=clamped,
        panicking=panicking,
        reason=reason,
        state=new_state,
        stable_in_flight=stable,
        panic_in_flight=panic,
    )
