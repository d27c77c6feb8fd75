"""The gateways' load reports, kept in memory: summed per endpoint for the autoscaler
(take), and kept as a bounded history per endpoint for the console's charts (history)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select

from corral.server.load_history import LoadHistory, Name, Sample
from corral.server.services.endpoint_reconcile import Load
from corral.server.store.db import Store
from corral.server.store.tables import Endpoint, Workspace
from corral.wire.gateway import GatewayLoad

# A gateway silent this long is gone: its last report no longer counts.
STALE_AFTER_S = 5.0

DesiredSource = Callable[[], Mapping[Name, int]]


@dataclass
class LoadBoard:
    reports: dict[str, tuple[float, GatewayLoad]] = field(default_factory=dict)
    # (gateway, workspace, endpoint) -> the arrivals counter already turned into samples.
    _seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # The charts' history keeps its own counters: taking (the autoscaler's) never moves it.
    history: LoadHistory = field(default_factory=lambda: LoadHistory(stale_after_s=STALE_AFTER_S))
    # Reports arrive on the API's worker threads, the console reads from others, and the
    # autoscaler's take forgets stale gateways on the loop: `reports` changes under it.
    _history_lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, load: GatewayLoad, now: float, desired: DesiredSource | None = None) -> None:
        """Keep a gateway's report; `desired` reads every endpoint's desired replicas from
        the store, called at most once a second for the history."""
        with self._history_lock:
            self.reports[load.gateway] = (now, load)
            due = desired is not None and self.history.wants_desired(now)
        counts = desired() if desired is not None and due else None  # outside the lock
        with self._history_lock:
            if counts is not None:
                self.history.set_desired(counts, now)
            self.history.record(dict(self.reports), now)

    def samples(self, workspace: str, endpoint: str, since: float) -> list[Sample]:
        """The endpoint's history since `since` (oldest first)."""
        with self._history_lock:
            return self.history.samples((workspace, endpoint), since)

    def take(self, workspace: str, endpoint: str, now: float) -> Load:
        """The endpoint's load summed over live gateways; arrivals since the last take."""
        total = Load()
        for gateway, (at, report) in list(self.reports.items()):
            if now - at > STALE_AFTER_S:
                with self._history_lock:  # not a report that came since it was read
                    if self.reports.get(gateway, (None,))[0] == at:
                        del self.reports[gateway]
                continue
            total.known = True
            for e in report.endpoints:
                if e.name != endpoint or e.workspace != workspace:
                    continue
                total.in_flight += e.mean_in_flight
                total.held += e.held
                key = (gateway, workspace, endpoint)
                last = self._seen.get(key)
                if last is not None:
                    # A counter that went down means the gateway restarted: count from zero.
                    total.arrivals += e.arrivals - last if e.arrivals >= last else e.arrivals
                self._seen[key] = e.arrivals
                for r in e.replicas:
                    total.per_replica[r.id] = total.per_replica.get(r.id, 0) + r.in_flight
        return total


def desired_replicas(store: Store) -> dict[Name, int]:
    """Every endpoint's desired replicas, by (workspace, name): one query."""
    with store.read() as session:
        rows = session.execute(
            select(Workspace.name, Endpoint.name, Endpoint.desired_replicas).join(
                Workspace, Endpoint.workspace_id == Workspace.id
            )
        ).all()
    return {(ws, name): desired for ws, name, desired in rows}
