"""What a committed change asks the shell to do next (never done inside a transaction)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Effects:
    sync_nodes: set[str] = field(default_factory=set)  # send these nodes their desired set
    wake_scheduler: bool = False
    routes_changed: bool = False  # the gateways' route table may differ: answer long polls
    wake_endpoints: bool = False  # the endpoint controller should look again now
    wake_pods: bool = False  # the pod controller should look again now

    def merge(self, other: Effects) -> Effects:
        self.sync_nodes |= other.sync_nodes
        self.wake_scheduler = self.wake_scheduler or other.wake_scheduler
        self.routes_changed = self.routes_changed or other.routes_changed
        self.wake_endpoints = self.wake_endpoints or other.wake_endpoints
        self.wake_pods = self.wake_pods or other.wake_pods
        return self
