"""Per-endpoint load signals for the autoscaler, and the gateway's Prometheus metrics.

In-flight is tracked as a time integral in one-second buckets, so the control plane reads
a time-averaged concurrency over any recent window regardless of how often it polls (and
several pollers do not disturb one another).
"""

from __future__ import annotations

import math
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKET_S = 1.0
HISTORY_BUCKETS = 64
LATENCY_SAMPLES = 1024

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _inside(begin: float, end: float, start: float) -> float:
    """The share of [begin, end] that lies after `start`."""
    if begin >= start:
        return 1.0
    return max(0.0, end - start) / (end - begin) if end > begin else 0.0


class LoadTracker:
    """In-flight, arrivals and latency of one endpoint, fed by the proxy."""

    def __init__(self, now: float) -> None:
        self.in_flight = 0
        self.held = 0
        self.arrivals = 0
        self.completed = 0
        self.rejected = 0
        self.last_arrival: float | None = None
        self.first_byte_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._changed_at = now
        self._bucket_start = math.floor(now / BUCKET_S) * BUCKET_S
        self._area = 0.0  # in-flight x seconds in the current bucket so far
        self._history: deque[tuple[float, float]] = deque(maxlen=HISTORY_BUCKETS)

    def _advance(self, now: float) -> None:
        # Close every bucket that ended before `now`, integrating the constant level over it.
        floor = math.floor(now / BUCKET_S) * BUCKET_S
        if floor - self._bucket_start > HISTORY_BUCKETS * BUCKET_S:
            # Long quiet spell: only the last HISTORY_BUCKETS matter, at the level held since.
            self._bucket_start = floor - HISTORY_BUCKETS * BUCKET_S
            self._changed_at, self._area = self._bucket_start, 0.0
        while now >= self._bucket_start + BUCKET_S:
            end = self._bucket_start + BUCKET_S
            self._area += self.in_flight * (end - self._changed_at)
            self._history.append((self._bucket_start, self._area))
            self._bucket_start, self._changed_at, self._area = end, end, 0.0
        self._area += self.in_flight * (now - self._changed_at)
        self._changed_at = now

    def arrive(self, now: float) -> None:
        self._advance(now)
        self.in_flight += 1
        self.arrivals += 1
        self.last_arrival = now

    def finish(self, now: float) -> None:
        self._advance(now)
        self.in_flight -= 1
        self.completed += 1

    def mean_in_flight(self, now: float, window_s: float) -> float:
        """Time-averaged in-flight over the last `window_s` seconds (before: none)."""
        self._advance(now)
        if window_s <= 0:
            return float(self.in_flight)
        start = now - window_s
        # Within a bucket the level is taken as even, so a bucket cut by the window's start
        # counts in proportion.
        area = self._area * _inside(self._bucket_start, now, start)
        for bucket_start, bucket_area in reversed(self._history):
            if bucket_start + BUCKET_S <= start:
                break
            area += bucket_area * _inside(bucket_start, bucket_start + BUCKET_S, start)
        return area / window_s

    def latency_quantile(self, q: float) -> float | None:
        if not self.first_byte_s:
            return None
        ordered = sorted(self.first_byte_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class EndpointSeries:
    """One endpoint's Prometheus children, looked up once rather than per request."""

    __slots__ = (
        "_codes",
        "_name",
        "_requests",
        "duration",
        "first_byte",
        "held",
        "in_flight",
        "rejected",
        "retries",
    )

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._requests = metrics.requests
        self._codes: dict[int, Counter] = {}
        self.in_flight = metrics.in_flight.labels(name)
        self.held = metrics.held.labels(name)
        self.first_byte = metrics.first_byte.labels(name)
        self.duration = metrics.duration.labels(name)
        self.retries = metrics.retries.labels(name)
        self.rejected = metrics.rejected.labels(name)
        self._name = name

    def answered(self, status: int) -> None:
        klass = status // 100
        child = self._codes.get(klass)
        if child is None:
            child = self._codes[klass] = self._requests.labels(self._name, f"{klass}xx")
        child.inc()


class Metrics:
    """Prometheus series; one registry per gateway (no process-global state)."""

    def series(self, name: str) -> EndpointSeries:
        found = self._series.get(name)
        if found is None:
            found = self._series[name] = EndpointSeries(self, name)
        return found

    def __init__(self) -> None:
        self._series: dict[str, EndpointSeries] = {}
        self.registry = CollectorRegistry()
        labels = ("endpoint",)
        self.requests = Counter(
            "corral_gateway_requests",
            "Requests answered, by endpoint and status code class",
            (*labels, "code"),
            registry=self.registry,
        )
        self.rejected = Counter(
            "corral_gateway_rejected",
            "Requests refused with 503 for want of a ready replica",
            labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "corral_gateway_retries",
            "Requests moved to another replica after a connect failure",
            labels,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "corral_gateway_in_flight",
            "Requests in flight, held ones included",
            labels,
            registry=self.registry,
        )
        self.held = Gauge(
            "corral_gateway_held",
            "Requests held waiting for a ready replica",
            labels,
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "corral_gateway_first_byte_seconds",
            "From request received to response headers sent",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "corral_gateway_request_duration_seconds",
            "From request received to response complete (streams included)",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
