"""What a committed change asks the shell to do next (never done inside a transaction)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Effects:
    sync_nodes: set[str] = field(default_factory=set)  # send these nodes their desired set
    wake_scheduler: bool = False

    def merge(self, other: Effects) -> Effects:
        self.sync_nodes |= other.sync_nodes
        self.wake_scheduler = self.wake_scheduler or other.wake_scheduler
        return self
