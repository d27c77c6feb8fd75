"""The pool controller: grow node pools for work that waits, give back idle nodes.

load     services/pool_fleet.py: pools, their instances and nodes (free room, idle since),
         pending jobs the scheduler could not place (not those waiting on quota)
decide   core/pools.py: which pools grow by how much, which nodes go, which pools rest
apply    instance rows (requested), released nodes cordoned, pools blocked, why work
         cannot be placed (fleet events), deleted pools removed once empty
effects  services/pool_actions.py, in a worker thread after commit: providers launch what
         was requested (each with a one-use join token) and terminate what was released
         once nothing runs there (a refused termination backs off); the node is then
         deleted; now and then a sweep terminates provider instances no live row knows

What a round tells people (unmet reasons, the notes in pending reasons) is published only
once its transaction committed (`committed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import pools as core
from corral.providers.base import Provider
from corral.providers.registry import ProviderSettings, provider_for
from corral.server.controllers import runner
from corral.server.runtime import ControlPlane
from corral.server.services import cluster, pool_actions, pool_fleet
from corral.server.services.effects import Effects
from corral.server.services.pools import FLEET, add_event, pool_spec
from corral.server.store.tables import Pool

log = logging.getLogger("corral.server.pools")

KEY = "fleet"
BATCH_S = 0.2  # after a wake-up: let the scheduler's round write its reasons first


@dataclass(frozen=True)
class Plan:
    load: pool_fleet.FleetLoad
    fleet: core.FleetPlan


@dataclass
class PoolController:
    cp: ControlPlane
    name: str = "pools"
    # Job id -> the unmet reason last recorded (not written again while unchanged).
    unmet_said: dict[str, str] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    has_pools: bool = False  # the last round saw a pool: providers may have work
    # What this round's plan says (unmet reasons, supply notes), shown only once its
    # transaction committed (`committed`): a rolled-back round must not leave a note
    # for growth that never happened.
    pending: tuple[dict[str, str], dict[str, str]] | None = None
    # Between act() passes: the stray-instance sweep and terminations' backoff.
    memory: pool_actions.Memory = field(default_factory=pool_actions.Memory)
    # This control plane's id (services/cluster.py), read once: it never changes.
    cluster_id: str | None = None

    def period_s(self, cp: ControlPlane) -> float:
        return cp.options.pool_interval_s

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        return cp.pools_wakeup

    def batch_s(self, cp: ControlPlane) -> float:
        return BATCH_S

    def prepare(self, cp: ControlPlane) -> None:
        pass

    def keys(self, session: Session, now: float) -> Sequence[str]:
        self.pending = None
        self.has_pools = session.scalars(select(Pool.name).limit(1)).first() is not None
        return [KEY] if self.has_pools else []

    def load(self, session: Session, key: str, now: float) -> pool_fleet.FleetLoad | None:
        return pool_fleet.load_fleet(session, self.cp.catalog, now)

    def decide(self, facts: pool_fleet.FleetLoad, now: float) -> Plan:
        return Plan(facts, core.decide(facts.facts, now))

    def apply(self, session: Session, key: str, plan: Plan, now: float) -> Effects:
        if not pool_fleet.versions_hold(session, plan.load):
            raise runner.Stale("a pool or instance changed")
        effects, _ = pool_fleet.apply_fleet(
            session, plan.load, plan.fleet, self.cp.catalog, now, self.unmet_said
        )
        notes = pool_fleet.supply_notes(plan.load.facts, plan.fleet, self.cp.supply_notes, now)
        self.pending = (dict(plan.fleet.unmet), notes)
        return effects

    def committed(self, done: runner.Round) -> None:
        """After a round: publish what its plan said, if its transaction committed."""
        pending, self.pending = self.pending, None
        if pending is None or done.again or KEY in done.failed:
            return
        self.unmet_said, notes = pending
        if notes != self.cp.supply_notes:
            self.cp.supply_notes = notes
            self.cp.wake_scheduler()  # its reasons carry them

    def failed(self, session: Session, key: str, reason: str) -> None:
        add_event(session, FLEET, self.cp.clock.now(), "error", reason)

    def reset(self) -> None:
        self.unmet_said.clear()

    def provider(self, name: str) -> Provider:
        found = self.providers.get(name)
        if found is None:
            settings = ProviderSettings(
                home=self.cp.options.home,
                catalog=self.cp.catalog,
                aws_regions=self._regions("aws"),
                allow_local=self.cp.options.allow_local_pools,
                cluster=self._cluster(),
            )
            found = self.providers[name] = provider_for(name, settings)
        return found

    def _cluster(self) -> str:
        if self.cluster_id is None:
            with self.cp.store.read() as session:
                found = cluster.stored_cluster_id(session)
            if found is None:  # the first server to need it makes it (a write, once)
                with self.cp.store.transaction() as session:
                    found = cluster.cluster_id(session)
            self.cluster_id = found
        return self.cluster_id

    def _regions(self, provider: str) -> tuple[str, ...]:
        with self.cp.store.read() as session:
            specs = [pool_spec(p) for p in session.scalars(select(Pool))]
        return tuple(sorted({s.region for s in specs if s.provider == provider}))

    def act(self) -> pool_actions.Acted:
        """Provider calls for what the store says (worker thread; no session held open
        across a call)."""
        cp = self.cp
        return pool_actions.act(
            cp.store,
            self.provider,
            cp.catalog,
            cp.options.resolved_public_url(),
            cp.clock.now,
            self.memory,
        )


async def run(cp: ControlPlane) -> None:
    """runner's loop, with the provider calls after each round's commit."""
    controller = PoolController(cp)

    async def after(done: runner.Round) -> None:
        controller.committed(done)
        if not controller.has_pools:
            return
        # Every pass, not only after a plan: a released node's work may have just ended.
        acted = await asyncio.to_thread(controller.act)
        for node_id in acted.hang_up:
            await cp.hub.hang_up(node_id)
        if acted.launched or acted.failed or acted.terminated:
            cp.wake_scheduler()  # new room is coming, or a choice failed: decide again

    await runner.run(cp, controller, after)
