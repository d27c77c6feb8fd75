"""The gateways' load reports, kept in memory and summed per endpoint for the autoscaler."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.server.services.endpoint_reconcile import Load
from corral.wire.gateway import GatewayLoad

# A gateway silent this long is gone: its last report no longer counts.
STALE_AFTER_S = 5.0


@dataclass
class LoadBoard:
    reports: dict[str, tuple[float, GatewayLoad]] = field(default_factory=dict)
    # (gateway, workspace, endpoint) -> the arrivals counter already turned into samples.
    _seen: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def report(self, load: GatewayLoad, now: float) -> None:
        self.reports[load.gateway] = (now, load)

    def take(self, workspace: str, endpoint: str, now: float) -> Load:
        """The endpoint's load summed over live gateways; arrivals since the last take."""
        total = Load()
        for gateway, (at, report) in list(self.reports.items()):
            if now - at > STALE_AFTER_S:
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
