"""Health probes of serving replicas: what each probe result means. Pure (no I/O, no clock).

One replica's probe state moves only on probe results:

```
 None ──any 2xx──► True ──failure_threshold failures in a row──► False
   │                 ▲                                              │
   │                 └──────────────────── any 2xx ◄────────────────┤
   └────────── failure_threshold failures in a row ────────────────►┘
 (None: no verdict yet: starting, or adopted by a restarted agent)
```

- Until its first 2xx (in this agent's life) a replica is probed on `readiness_path`; after
  that on `liveness_path` (default: the readiness path), recovery included.
- A single 2xx makes it ready; `failure_threshold` consecutive failures make it unready,
  whether it had passed before or not. Fewer failures change nothing, so a replica adopted
  by a restarted agent (which starts again from None) is not declared unready by one blip.
- The caller reports `ready` whenever it differs from the last state's: on change only.

Probes run at a fixed rate, `period_s` from the start of one to the start of the next; one
that takes longer than the period (a slow timeout) is followed at once, never by a burst.

An unready replica says why, in the words of its last failure and for how long the failures
have lasted: "GET /health answered 404 for 40 s", "connection refused on port 8000 for
12 s", "GET /health timed out after 2 s (failing for 6 s)". The reason is reported with the
verdict, again when the failure changes, and at most every `REASON_REFRESH_S` as it ages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from corral.wire.agent import Probe

REASON_REFRESH_S = 10.0
OWNER_RECHECK_S = 5.0  # while ready: how often who listens on its port is looked at again


@dataclass(frozen=True)
class Failure:
    """One failed probe, in words."""

    words: str  # "GET /health answered 404", "connection refused on port 8000"
    lasting: bool = True  # "<words> for 40 s" reads right; else "<words> (failing for 40 s)"

    def reason(self, seconds: float) -> str:
        lasted = _seconds(seconds)
        return (
            f"{self.words} for {lasted}" if self.lasting else f"{self.words} (failing for {lasted})"
        )


def answered(path: str, status: int) -> Failure:
    return Failure(f"GET {path} answered {status}")


def refused(port: int) -> Failure:
    return Failure(f"connection refused on port {port}")


def timed_out(path: str, timeout_s: float) -> Failure:
    return Failure(f"GET {path} timed out after {_seconds(timeout_s)}", lasting=False)


def failed(path: str, port: int, detail: str) -> Failure:
    return Failure(f"GET {path} on port {port} failed: {detail}", lasting=False)


def foreign(why: str) -> Failure:
    """A probe answered by a process that is not the replica (ownership.py says which)."""
    return Failure(why, lasting=False)


def _seconds(value: float) -> str:
    shown = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
    return f"{shown} s"


@dataclass(frozen=True)
class ProbeState:
    ready: bool | None = None  # the verdict the server is (or will be) told; None: no verdict
    passed: bool = False  # a probe has passed since this agent started: liveness from now on
    failures: int = 0  # consecutive failed probes since the last pass
    due: float = 0.0  # when the next probe starts (monotonic seconds)
    failing_since: float | None = None  # when the current failure (this kind) began
    failure: Failure | None = None  # the last failure of the current run
    reported: Failure | None = None  # the failure of the reason last reported
    reported_at: float = 0.0  # when that reason was reported


def first(now: float) -> ProbeState:
    """The state of a replica that just began running (or was just adopted): probe at once."""
    return ProbeState(due=now)


def path(probe: Probe, state: ProbeState) -> str:
    """The path the next probe asks for."""
    if state.passed:
        return probe.liveness_path or probe.readiness_path
    return probe.readiness_path


def observe(
    probe: Probe,
    state: ProbeState,
    ok: bool,
    started: float,
    now: float,
    failure: Failure | None = None,
) -> ProbeState:
    """The state after a probe that began at `started` and ended at `now` with `ok` (2xx);
    `failure` says how it failed."""
    due = max(started + probe.period_s, now)
    if ok:
        return ProbeState(ready=True, passed=True, failures=0, due=due)
    failures = state.failures + 1
    ready = False if failures >= probe.failure_threshold else state.ready
    failure = failure or state.failure or Failure("the probe failed")
    # "for 40 s" is how long this failure has lasted: another kind starts the count again.
    same = state.failing_since is not None and failure == state.failure
    return dataclasses.replace(
        state,
        ready=ready,
        failures=failures,
        due=due,
        failing_since=state.failing_since if same else started,
        failure=failure,
    )


def owner_check_due(
    probe: Probe, state: ProbeState, ok: bool, verified_at: float | None, now: float
) -> bool:
    """Whether to look at who listens on the port before taking a probe's result: before a
    pass can make the replica ready, every `OWNER_RECHECK_S` while it is ready, and when a
    failure is about to make it unready (a stranger holding the port explains the failure
    better than its status code)."""
    if ok:
        if state.ready is not True or verified_at is None:
            return True
        return now - verified_at >= OWNER_RECHECK_S
    return state.ready is not False and state.failures + 1 >= probe.failure_threshold


def news(before: ProbeState, after: ProbeState) -> bool | None:
    """What to report after a probe: the new verdict if it changed, else None (nothing)."""
    return after.ready if after.ready != before.ready else None


def reason(state: ProbeState, now: float) -> str | None:
    """Why the replica is not ready, or None while it is not known to be unready."""
    if state.ready is not False or state.failure is None or state.failing_since is None:
        return None
    return state.failure.reason(max(0.0, now - state.failing_since))


def reason_due(state: ProbeState, now: float) -> bool:
    """Whether an unready replica's reason should be reported again: its failure changed
    (404 became connection refused), or the one reported is `REASON_REFRESH_S` old."""
    if state.ready is not False or state.failure is None:
        return False
    return state.failure != state.reported or now - state.reported_at >= REASON_REFRESH_S


def reported(state: ProbeState, now: float) -> ProbeState:
    """The state once its reason (if any) went out at `now`."""
    return dataclasses.replace(state, reported=state.failure, reported_at=now)


def is_success(status: int) -> bool:
    return 200 <= status < 300


def status_code(status_line: bytes) -> int | None:
    """The code in an HTTP/1.x status line (`HTTP/1.1 200 OK`), or None if it is not one."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return int(code)
