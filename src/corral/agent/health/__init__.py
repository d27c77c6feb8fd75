"""The node side of GPU and node health checks: what the agent reports in `health` messages
(corral.wire.health), judged by the control plane."""

from corral.agent.health.monitor import FaultRefused, HealthMonitor

__all__ = ["FaultRefused", "HealthMonitor"]
