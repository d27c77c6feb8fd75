"""The running control plane: store, clock, agent hub, and the controllers' wake-ups."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from corral.server.clock import Clock
from corral.server.config import ServerOptions
from corral.server.hub import AgentHub
from corral.server.services.effects import Effects
from corral.server.store.db import Store


@dataclass
class ControlPlane:
    options: ServerOptions
    store: Store
    clock: Clock
    hub: AgentHub
    started_at: float
    loop: asyncio.AbstractEventLoop | None = None
    scheduler_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, effects: Effects) -> None:
        """Carry out a committed change's effects; callable from any thread."""
        if effects.sync_nodes:
            self.hub.sync(effects.sync_nodes)
        if effects.wake_scheduler:
            self.wake_scheduler()

    def wake_scheduler(self) -> None:
        if self.loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.scheduler_wakeup.set()
        else:
            self.loop.call_soon_threadsafe(self.scheduler_wakeup.set)
