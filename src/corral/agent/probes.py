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
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.wire.agent import Probe


@dataclass(frozen=True)
class ProbeState:
    ready: bool | None = None  # the verdict the server is (or will be) told; None: no verdict
    passed: bool = False  # a probe has passed since this agent started: liveness from now on
    failures: int = 0  # consecutive failed probes since the last pass
    due: float = 0.0  # when the next probe starts (monotonic seconds)


def first(now: float) -> ProbeState:
    """The state of a replica that just began running (or was just adopted): probe at once."""
    return ProbeState(due=now)


def path(probe: Probe, state: ProbeState) -> str:
    """The path the next probe asks for."""
    if state.passed:
        return probe.liveness_path or probe.readiness_path
    return probe.readiness_path


def observe(probe: Probe, state: ProbeState, ok: bool, started: float, now: float) -> ProbeState:
    """The state after a probe that began at `started` and ended at `now` with `ok` (2xx)."""
    due = max(started + probe.period_s, now)
    if ok:
        return ProbeState(ready=True, passed=True, failures=0, due=due)
    failures = state.failures + 1
    ready = False if failures >= probe.failure_threshold else state.ready
    return ProbeState(ready=ready, passed=state.passed, failures=failures, due=due)


def news(before: ProbeState, after: ProbeState) -> bool | None:
    """What to report after a probe: the new verdict if it changed, else None (nothing)."""
    return after.ready if after.ready != before.ready else None


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
