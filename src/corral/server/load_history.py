"""A bounded history of each endpoint's load, as the gateways report it: what the endpoint
page charts (requests per second, latency, in flight, replicas over time).

Pure: the gateways' latest reports and `now` in, fixed-size rings of samples out. No clock,
no I/O; the caller (server/loads.py) serializes calls.

One sample per endpoint per step (1 s), taken when a report crosses a step boundary, from
the latest report of every live gateway together:
- requests per second: the arrivals counters' growth since the previous sample, summed over
  the gateways, over the time between the two samples. A counter that went down means its
  gateway restarted: it counts from zero (as LoadBoard.take does). A gateway seen for the
  first time gives a baseline, not arrivals. This bookkeeping is the history's own: the
  autoscaler's (LoadBoard.take, `_seen`) is never read or moved.
- latency p50 / p99: the worst across the gateways that received requests since the
  previous sample (a percentile of percentiles cannot be averaged honestly; the worst is an
  upper bound). None in a second no request arrived: the gateway's figures are over its last
  1,024 requests, which would otherwise draw an idle endpoint's old latency as current.
- in flight (time-averaged over the gateway's window) and held: summed over the gateways.
- ready replicas: the most any live gateway routes to (each has the whole route table).
- desired replicas: the endpoint's desired count as last read from the store (set_desired),
  None while unknown.

Bounds: `capacity` samples per endpoint (900: 15 min at 1 s), at most `max_endpoints`
endpoints (the least recently busy is forgotten first), an endpoint the store no longer has
is forgotten at the next read of it, and one nobody reported for a whole window is dropped.
Each ring is `capacity` x 8 doubles, allocated once: 57.6 KB at 900 samples.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.wire.gateway import GatewayLoad

Name = tuple[str, str]  # (workspace, endpoint): how the gateways name an endpoint

STEP_S = 1.0
CAPACITY = 900  # 15 minutes at one sample a second
MAX_ENDPOINTS = 256
STALE_AFTER_S = 5.0  # a gateway silent this long is gone (LoadBoard's rule)
DESIRED_EVERY_S = 1.0  # how often the desired counts are worth reading from the store

# A sample's columns, in ring order. NaN stands for "none" (no latency, desired unknown).
COLUMNS = ("t", "rps", "p50_ms", "p99_ms", "in_flight", "held", "ready", "desired")
WIDTH = len(COLUMNS)
NONE = math.nan


@dataclass(frozen=True)
class Sample:
    t: float
    rps: float | None  # None: no gateway had a baseline yet (first sight)
    p50_ms: float | None
    p99_ms: float | None
    in_flight: float
    held: int
    ready: int
    desired: int | None


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


def _row(s: Sample) -> tuple[float, ...]:
    def f(x: float | None) -> float:
        return NONE if x is None else float(x)

    return (
        s.t,
        f(s.rps),
        f(s.p50_ms),
        f(s.p99_ms),
        s.in_flight,
        float(s.held),
        float(s.ready),
        f(s.desired),
    )


def _sample(row: tuple[float, ...]) -> Sample:
    t, rps, p50, p99, in_flight, held, ready, desired = row
    return Sample(
        t=t,
        rps=_opt(rps),
        p50_ms=_opt(p50),
        p99_ms=_opt(p99),
        in_flight=in_flight,
        held=int(held),
        ready=int(ready),
        desired=None if math.isnan(desired) else int(desired),
    )


class Ring:
    """The last `capacity` samples of one endpoint, in one preallocated array of doubles."""

    __slots__ = ("_data", "capacity", "count", "created_at", "last_busy", "start")

    def __init__(self, capacity: int, created_at: float) -> None:
        self.capacity = capacity
        self._data = array("d", bytes(8 * WIDTH * capacity))
        self.start = 0  # index of the oldest sample
        self.count = 0
        self.created_at = created_at
        self.last_busy = -math.inf  # when it last had a request arriving, open or held

    def append(self, sample: Sample) -> None:
        slot = (self.start + self.count) % self.capacity
        if self.count == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.count += 1
        self._data[slot * WIDTH : (slot + 1) * WIDTH] = array("d", _row(sample))
        if (sample.rps or 0) > 0 or sample.in_flight > 0 or sample.held > 0:
            self.last_busy = sample.t

    def last_t(self) -> float | None:
        if self.count == 0:
            return None
        slot = (self.start + self.count - 1) % self.capacity
        return self._data[slot * WIDTH]

    def samples(self, since: float = -math.inf) -> list[Sample]:
        out = []
        for i in range(self.count):
            slot = (self.start + i) % self.capacity
            row = tuple(self._data[slot * WIDTH : (slot + 1) * WIDTH])
            if row[0] >= since:
                out.append(_sample(row))
        return out

    @property
    def bytes(self) -> int:
        return self._data.itemsize * len(self._data)


@dataclass
class LoadHistory:
    capacity: int = CAPACITY
    max_endpoints: int = MAX_ENDPOINTS
    step_s: float = STEP_S
    stale_after_s: float = STALE_AFTER_S
    rings: dict[Name, Ring] = field(default_factory=dict)
    # (gateway, workspace, endpoint) -> its arrivals counter at the last sample.
    _seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _sampled_at: float | None = None
    _desired: dict[Name, int] = field(default_factory=dict)
    _desired_at: float | None = None  # when the store was read for them
    _desired_asked: float = -math.inf

    # -- the desired counts, read from the store by the caller -----------------------------

    def wants_desired(self, now: float) -> bool:
        """Whether the desired counts are due for a read (at most one a DESIRED_EVERY_S);
        a True answer claims the read."""
        if now - self._desired_asked < DESIRED_EVERY_S:
            return False
        self._desired_asked = now
        return True

    def set_desired(self, desired: Mapping[Name, int], read_at: float) -> None:
        """Every endpoint's desired replicas as the store had them at `read_at`. An endpoint
        it lacks was deleted: its history is forgotten (unless it began after the read)."""
        self._desired = dict(desired)
        self._desired_at = read_at
        for name in [n for n, r in self.rings.items() if n not in desired]:
            if self.rings[name].created_at <= read_at:
                self._forget(name)

    # -- sampling ------------------------------------------------------------------------

    def record(self, reports: Mapping[str, tuple[float, GatewayLoad]], now: float) -> bool:
        """After a report: take a sample of every endpoint the live gateways report, once a
        step. True when it did."""
        last = self._sampled_at
        if last is not None and math.floor(now / self.step_s) <= math.floor(last / self.step_s):
            return False
        live = {g: load for g, (at, load) in reports.items() if now - at <= self.stale_after_s}
        for key in [k for k in self._seen if k[0] not in live]:
            del self._seen[key]  # a gateway gone stale: back at a baseline if it returns
        elapsed = None if self._sampled_at is None else now - self._sampled_at
        by_name: dict[Name, list[tuple[str, int, GatewayLoad]]] = {}
        for gateway, load in live.items():
            for i, e in enumerate(load.endpoints):
                by_name.setdefault((e.workspace, e.name), []).append((gateway, i, load))
        for name, seen_by in by_name.items():
            self._ring(name, now).append(self._take(name, seen_by, elapsed, now))
        self._sampled_at = now
        self._drop_silent(now)
        return True

    def _take(
        self,
        name: Name,
        seen_by: list[tuple[str, int, GatewayLoad]],
        elapsed: float | None,
        now: float,
    ) -> Sample:
        arrivals, based = 0, False
        in_flight, held, ready = 0.0, 0, 0
        p50: float | None = None
        p99: float | None = None
        for gateway, i, load in seen_by:
            e = load.endpoints[i]
            key = (gateway, name[0], name[1])
            last = self._seen.get(key)
            self._seen[key] = e.arrivals
            in_flight += e.mean_in_flight
            held += e.held
            ready = max(ready, sum(1 for r in e.replicas if r.state == "ready"))
            if last is None:
                continue  # first sight of this gateway's counter: a baseline
            based = True
            grew = e.arrivals - last if e.arrivals >= last else e.arrivals
            arrivals += grew
            if grew > 0:
                p50 = _worst(p50, e.latency_p50_ms)
                p99 = _worst(p99, e.latency_p99_ms)
        rps = round(arrivals / elapsed, 3) if based and elapsed and elapsed > 0 else None
        desired = self._desired.get(name) if self._desired_fresh(now) else None
        return Sample(now, rps, p50, p99, round(in_flight, 4), held, ready, desired)

    def _desired_fresh(self, now: float) -> bool:
        return self._desired_at is not None and now - self._desired_at <= self.stale_after_s

    def _ring(self, name: Name, now: float) -> Ring:
        ring = self.rings.get(name)
        if ring is None:
            while len(self.rings) >= self.max_endpoints:
                quietest = min(
                    self.rings, key=lambda n: (self.rings[n].last_busy, self.rings[n].created_at)
                )
                self._forget(quietest)
            ring = self.rings[name] = Ring(self.capacity, now)
        return ring

    def _drop_silent(self, now: float) -> None:
        """Forget endpoints no gateway reported for a whole window (deleted, most likely,
        where no store read says so)."""
        window = self.capacity * self.step_s
        for name, ring in list(self.rings.items()):
            last = ring.last_t()
            if last is not None and now - last > window:
                self._forget(name)

    def _forget(self, name: Name) -> None:
        self.rings.pop(name, None)
        for key in [k for k in self._seen if (k[1], k[2]) == name]:
            del self._seen[key]

    # -- reading -------------------------------------------------------------------------

    def samples(self, name: Name, since: float = -math.inf) -> list[Sample]:
        ring = self.rings.get(name)
        return [] if ring is None else ring.samples(since)

    def memory_bound(self) -> int:
        """The most bytes the rings can hold (the samples' arrays)."""
        return self.max_endpoints * self.capacity * WIDTH * 8


def _worst(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return b if a is None else max(a, b)
