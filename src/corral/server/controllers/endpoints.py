"""The endpoint controller: every endpoint scaled to its load and reconciled — replicas
started, replaced, rolled out, drained and stopped — one endpoint at a time.

    prepare  (event loop) take the gateways' loads since the last round
    load     services/endpoint_reconcile.py: the endpoint's facts, read in one session
    decide   core/endpoints.py: the plan (pure)
    apply    services/endpoint_apply.py: written in one transaction, if the facts still hold

The autoscaler's memory is stored with the endpoint (by the plan), not kept here: a
restarted server, or another one taking over the controllers, carries on from it. What
is kept here is only the gateways' load not yet used by a decision that was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import endpoints as core
from corral.server.controllers import runner
from corral.server.runtime import ControlPlane
from corral.server.services import endpoint_apply
from corral.server.services import endpoint_reconcile as facts
from corral.server.services.effects import Effects
from corral.server.store.tables import Endpoint, Workspace

log = logging.getLogger("corral.server.endpoints")

TICK_S = 1.0

Name = tuple[str, str]  # (workspace, endpoint): how the gateways name an endpoint


@dataclass(frozen=True)
class Deciding:
    """A plan and the facts it was decided on (the applier checks they still hold)."""

    plan: core.EndpointPlan
    loaded: facts.Loaded


@dataclass
class EndpointController:
    name: str = "endpoints"
    # The endpoints seen by the last round, so that their load is taken even when no
    # gateway mentions them (a gateway's silence about one is "no traffic").
    names: dict[str, Name] = field(default_factory=dict)
    # Loads taken from the gateways and not yet used by a plan that was written: a plan
    # that went stale or failed must not lose the arrivals it saw.
    traffic: dict[Name, facts.Load] = field(default_factory=dict)

    def period_s(self, cp: ControlPlane) -> float:
        return TICK_S

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        return cp.endpoints_wakeup

    def batch_s(self, cp: ControlPlane) -> float:
        return 0.0

    def prepare(self, cp: ControlPlane) -> None:
        """Take the loads once a round: taking is destructive (arrivals are counted once).
        The gateways' reports are written from the API's worker threads meanwhile: read the
        board through copies (list() of a dict is one step under the GIL)."""
        now = cp.clock.now()
        held, cp.held = cp.held, {}
        names = set(self.names.values()) | set(held)
        for _, report in list(cp.loads.reports.values()):
            names.update((e.workspace, e.name) for e in report.endpoints)
        for name in names:
            load = cp.loads.take(name[0], name[1], now)
            load.held = max(load.held, held.get(name, 0))
            older = self.traffic.get(name)
            if older is not None:
                load.merge_older(older)
            self.traffic[name] = load

    def keys(self, session: Session, now: float) -> Sequence[str]:
        rows = session.execute(
            select(Endpoint.id, Workspace.name, Endpoint.name).join(
                Workspace, Endpoint.workspace_id == Workspace.id
            )
        ).all()
        self.names = {endpoint_id: (ws, name) for endpoint_id, ws, name in rows}
        live = set(self.names.values())
        for gone in set(self.traffic) - live:
            del self.traffic[gone]
        return list(self.names)

    def load(self, session: Session, key: str, now: float) -> facts.Loaded | None:
        endpoint = session.get(Endpoint, key)
        if endpoint is None:
            return None
        traffic = self.traffic.get(self.names.get(key, ("", "")))
        return facts.load(session, endpoint, traffic, now)

    def decide(self, loaded: facts.Loaded, now: float) -> Deciding:
        return Deciding(core.reconcile(loaded.facts, now), loaded)

    def apply(self, session: Session, key: str, plan: Deciding, now: float) -> Effects:
        try:
            effects = endpoint_apply.apply(session, plan.loaded, plan.plan, now)
        except endpoint_apply.Changed as exc:
            raise runner.Stale(str(exc)) from None
        # Used by a written plan (a failed commit loses it, as a crash would).
        self.traffic.pop((plan.loaded.workspace, plan.loaded.facts.name), None)
        return effects

    def failed(self, session: Session, key: str, reason: str) -> None:
        """Say why in the endpoint's status, where its owner looks (`corral endpoint get`)."""
        endpoint = session.get(Endpoint, key)
        if endpoint is not None and endpoint.reason != reason:
            endpoint.reason = reason

    def reset(self) -> None:
        pass  # the autoscaler's memory is in the store; the loads are kept for the next try


def reconcile_once(cp: ControlPlane, controller: EndpointController | None = None) -> Effects:
    """One round over every endpoint, at once (tests and tools); the server runs `run`."""
    controller = controller or EndpointController()
    controller.prepare(cp)
    done = runner.Runner(controller).round(cp)
    if done.again:
        done.effects.wake_endpoints = True  # decided on stale facts: decide again
    return done.effects


async def run(cp: ControlPlane) -> None:
    await runner.run(cp, EndpointController())
