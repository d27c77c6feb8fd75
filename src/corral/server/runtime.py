"""The running control plane: store, clock, agent hub, and the controllers' wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.providers.catalog import Catalog
from corral.server.artifacts.store import ArtifactStore
from corral.server.auth import Principal
from corral.server.clock import Clock
from corral.server.config import ServerOptions
from corral.server.hub import AgentHub
from corral.server.lease import Lease
from corral.server.loads import LoadBoard
from corral.server.relay import RelayBoard
from corral.server.routes import RouteBoard
from corral.server.services.effects import Effects
from corral.server.store.db import Store
from corral.server.ttlcache import TtlCache
from corral.server.writes import GroupCommit

# How long an API process trusts what it read of a token or a workspace: a token revoked
# elsewhere stops working here within this time.
AUTH_TTL_S = 10.0


@dataclass
class ControlPlane:
    options: ServerOptions
    store: Store
    clock: Clock
    hub: AgentHub
    started_at: float
    loop: asyncio.AbstractEventLoop | None = None
    scheduler_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    endpoints_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    pods_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    pools_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Instance types and prices (providers/catalog.py): pools, the autoscaler, cost.
    catalog: Catalog = field(default_factory=Catalog)
    # Job id -> what the pool controller is doing about it ("pool p5 is adding 2 nodes for
    # it"), appended to the job's pending reason by the scheduler (pool_fleet.supply_notes).
    supply_notes: dict[str, str] = field(default_factory=dict)
    # Sessions into pods and replicas waiting for, or joined to, their node's dial-back.
    relays: RelayBoard = field(default_factory=RelayBoard)
    # Set when the server begins to stop: long polls answer at once instead of holding.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    routes: RouteBoard = field(default_factory=RouteBoard)
    loads: LoadBoard = field(default_factory=LoadBoard)
    # Node id -> when the server last heard from it; flushed to the store by liveness.
    heard: dict[str, float] = field(default_factory=dict)
    # Node id -> when its agent's connection closed (until it says hello again); the nodes
    # whose agents keep a lifeline, and when each lifeline last spoke (core/liveness.py).
    closed: dict[str, float] = field(default_factory=dict)
    lifelines: set[str] = field(default_factory=set)
    lifeline_at: dict[str, float] = field(default_factory=dict)
    lifeline_tokens: TtlCache[str, str] = field(default_factory=lambda: TtlCache(AUTH_TTL_S))
    # Requests the gateways hold per (workspace, endpoint), from their wake-ups.
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    # Who a token is, and a workspace by name, for a few seconds: see server/api/deps.py.
    principals: TtlCache[str, Principal] = field(default_factory=lambda: TtlCache(AUTH_TTL_S))
    workspaces: TtlCache[str, tuple[str, str]] = field(default_factory=lambda: TtlCache(AUTH_TTL_S))
    writes: GroupCommit = field(init=False)
    # Whether this server runs the controllers (server/lease.py); None: no lease is kept.
    lease: Lease | None = None
    # Uploaded working directories (server/artifacts); None: this server takes none.
    artifacts: ArtifactStore | None = None

    def __post_init__(self) -> None:
        self.writes = GroupCommit(self.store)

    def apply(self, effects: Effects) -> None:
        """Carry out a committed change's effects; callable from any thread."""
        if effects.sync_nodes:
            self.hub.sync(effects.sync_nodes)
            # A replica started or stopped somewhere: it may be an endpoint's.
            self.poke_routes()
            self._set(self.endpoints_wakeup)
        if effects.wake_scheduler:
            self.wake_scheduler()
            # Work waiting for GPUs may be what makes a pool grow.
            self._set(self.pools_wakeup)
        if effects.routes_changed:
            self.poke_routes()
        if effects.wake_endpoints:
            self._set(self.endpoints_wakeup)
        if effects.wake_pods:
            self._set(self.pods_wakeup)

    def leads(self) -> bool:
        """Whether this server's controllers may act on the store now."""
        return self.lease is None or self.lease.held

    def wake_scheduler(self) -> None:
        self._set(self.scheduler_wakeup)

    def wake_pools(self) -> None:
        self._set(self.pools_wakeup)

    def wake_endpoints(self) -> None:
        self._set(self.endpoints_wakeup)

    def poke_routes(self) -> None:
        self._call(self.routes.poke)

    def _set(self, event: asyncio.Event) -> None:
        self._call(event.set)

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the event loop's thread (at once if this is it)."""
        if self.loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)
