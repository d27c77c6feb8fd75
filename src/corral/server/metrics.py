"""The fleet in Prometheus' terms, for `GET /metrics`: read from the store at each scrape.

```
 scrape ─► registry (one per control plane) ─► FleetCollector.collect()
                                                 │ one read session, aggregate queries
                                                 ▼
                                               Figures ─► metric families
           └────────────────────────────────► controllers' round-time histogram (runner.py)
```

Counts are grouped in SQL; only the nodes (their GPUs and health live in JSON) and the
attempts of live training jobs (for ETTR) are read row by row, both bounded by the fleet's
size rather than by its history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core import goodput
from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.states import TERMINAL_JOB_STATES, JobState, NodeCondition
from corral.server.controllers.runner import ROUND_SECONDS
from corral.server.runtime import ControlPlane
from corral.server.services.recovery import attempt_record
from corral.server.store.tables import RETIRED_PREFIX, Attempt, HealthEvent, Job, Node, Replica

HEALTHS = frozenset({"healthy", "degraded", "unhealthy", "unknown"})
MAX_LABEL = 64  # a signal's name comes from an agent: bounded, so a series stays a series


@dataclass
class Figures:
    """What one scrape read, counted by label values."""

    nodes: Counter[tuple[str, str]] = field(default_factory=Counter)  # condition, health
    gpus: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # model, state, health
    failing_checks: Counter[tuple[str, str]] = field(default_factory=Counter)  # signal, health
    xids: dict[str, int] = field(default_factory=dict)  # code -> events
    jobs: dict[str, int] = field(default_factory=dict)  # state -> jobs
    attempts_ended: dict[str, int] = field(default_factory=dict)  # cause -> attempts
    ettr: float | None = None  # None: no live training job has started an attempt


def health_of(value: object) -> str:
    """One of HEALTHS: what an agent reported, read defensively."""
    return value if isinstance(value, str) and value in HEALTHS else "unknown"


def node_health(health: Mapping[str, Any] | None) -> str:
    return health_of(health.get("health")) if isinstance(health, Mapping) else "unknown"


def gpu_health(health: Mapping[str, Any] | None, gpu: Mapping[str, Any]) -> str:
    """The GPU's judged health (Node.health's per-GPU entry), else its inventory flag."""
    judged = health.get("gpus") if isinstance(health, Mapping) else None
    if isinstance(judged, list):
        for entry in judged:
            if isinstance(entry, Mapping) and entry.get("index") == gpu.get("index"):
                return health_of(entry.get("health"))
    flag = gpu.get("healthy")
    if flag is True:
        return "healthy"
    if flag is False:
        return "unhealthy"
    return "unknown"


def gpu_state(condition: NodeCondition, allocated: bool) -> str:
    """allocated, idle, cordoned (a cordoned or unhealthy node) or lost."""
    if condition == NodeCondition.LOST:
        return "lost"  # what it held is being recovered elsewhere
    if allocated:
        return "allocated"  # a cordoned node keeps running what it has
    if condition == NodeCondition.READY:
        return "idle"
    return "cordoned"


def read_figures(session: Session, now: float) -> Figures:
    figures = Figures()
    _read_nodes(session, figures)
    figures.xids = {
        str(code): int(n)
        for code, n in session.execute(
            select(HealthEvent.code, func.count())
            .where(HealthEvent.kind == "xid", HealthEvent.code.is_not(None))
            .group_by(HealthEvent.code)
        )
    }
    figures.jobs = {
        str(state): int(n)
        for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state))
    }
    figures.attempts_ended = {
        str(cause): int(n)
        for cause, n in session.execute(
            select(Attempt.end_cause, func.count())
            .where(Attempt.end_cause.is_not(None))
            .group_by(Attempt.end_cause)
        )
    }
    figures.ettr = _fleet_ettr(session, now)
    return figures


def _read_nodes(session: Session, figures: Figures) -> None:
    held: dict[str, set[int]] = {}
    for node_id, gpus in session.execute(
        select(Replica.node_id, Replica.gpus).where(Replica.state.in_(ACTIVE_REPLICA_STATES))
    ):
        held.setdefault(node_id, set()).update(gpus or ())
    for node_id, condition, gpus, health in session.execute(
        select(Node.id, Node.condition, Node.gpus, Node.health).where(
            Node.name.not_like(f"{RETIRED_PREFIX}%")  # deleted nodes kept for their history
        )
    ):
        judged = node_health(health)
        figures.nodes[(str(condition), judged)] += 1
        for gpu in gpus or ():
            model = str(gpu.get("model") or "unknown")
            state = gpu_state(condition, gpu.get("index") in held.get(node_id, ()))
            figures.gpus[(model, state, gpu_health(health, gpu))] += 1
        if judged == "healthy" or not isinstance(health, Mapping):
            continue
        for finding in health.get("findings") or ():
            if isinstance(finding, Mapping):
                signal = str(finding.get("signal") or "unknown")[:MAX_LABEL]
                figures.failing_checks[(signal, health_of(finding.get("health")))] += 1


def _fleet_ettr(session: Session, now: float) -> float | None:
    """Productive ÷ wall time over the training jobs that are not over, each accounted by
    core.goodput as `corral job show` accounts it; None when none has had an attempt."""
    runs: dict[str, list[goodput.AttemptRecord]] = {}
    for row in session.scalars(
        select(Attempt)
        .join(Job, Attempt.job_id == Job.id)
        .where(Job.state.not_in(TERMINAL_JOB_STATES), Job.endpoint_id.is_(None))
    ):
        runs.setdefault(row.job_id, []).append(attempt_record(row))
    if not runs:
        return None
    accounts = [goodput.goodput(attempts, now) for attempts in runs.values()]
    wall = sum(g.wall_s for g in accounts)
    return sum(g.productive_s for g in accounts) / wall if wall > 0 else 0.0


def families(figures: Figures) -> Iterator[Metric]:
    nodes = GaugeMetricFamily(
        "corral_nodes", "Nodes by condition and judged health.", labels=["condition", "health"]
    )
    for (condition, health), n in sorted(figures.nodes.items()):
        nodes.add_metric([condition, health], n)
    yield nodes
    gpus = GaugeMetricFamily(
        "corral_gpus",
        "GPUs by model, state (allocated, idle, cordoned, lost) and health.",
        labels=["model", "state", "health"],
    )
    for (model, state, health), n in sorted(figures.gpus.items()):
        gpus.add_metric([model, state, health], n)
    yield gpus
    xids = CounterMetricFamily(
        "corral_gpu_xids", "GPU Xid events the nodes reported, by Xid code.", labels=["code"]
    )
    for code, n in sorted(figures.xids.items()):
        xids.add_metric([code], n)
    yield xids
    failing = GaugeMetricFamily(
        "corral_health_checks_failing",
        "Health findings on nodes not judged healthy, by signal and the finding's health.",
        labels=["signal", "health"],
    )
    for (signal, health), n in sorted(figures.failing_checks.items()):
        failing.add_metric([signal, health], n)
    yield failing
    jobs = GaugeMetricFamily("corral_jobs", "Jobs by state.", labels=["state"])
    for state in JobState:  # every state, zeros included: a series does not vanish
        jobs.add_metric([state.value], figures.jobs.get(state.value, 0))
    yield jobs
    yield GaugeMetricFamily(
        "corral_queue_length",
        "Jobs pending: waiting to be placed.",
        value=figures.jobs.get(JobState.PENDING.value, 0),
    )
    ended = CounterMetricFamily(
        "corral_attempts_ended", "Job attempts that ended, by cause.", labels=["cause"]
    )
    for cause, n in sorted(figures.attempts_ended.items()):
        ended.add_metric([cause], n)
    yield ended
    ettr = GaugeMetricFamily(
        "corral_fleet_ettr",
        "Effective training time ratio (productive / wall time) over the training jobs not "
        "yet over; absent when none has started.",
    )
    if figures.ettr is not None:
        ettr.add_metric([], figures.ettr)
    yield ettr


class FleetCollector:
    """A prometheus_client collector: one read session per scrape."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def collect(self) -> Iterator[Metric]:
        with self.cp.store.read() as session:
            figures = read_figures(session, self.cp.clock.now())
        yield from families(figures)


def registry_for(cp: ControlPlane) -> CollectorRegistry:
    """A registry of this control plane's own: tests make many apps in one process, and
    the global registry would mix them (or refuse a second collector)."""
    registry = CollectorRegistry(auto_describe=False)  # registering reads nothing
    registry.register(FleetCollector(cp))
    registry.register(ROUND_SECONDS)
    return registry
