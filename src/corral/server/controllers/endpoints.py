"""The endpoint controller: each tick (or at once on a wake-up), every endpoint is scaled to
its load and reconciled — replicas started, replaced, rolled out, drained and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from corral.core import autoscale
from corral.server.runtime import ControlPlane
from corral.server.services import endpoint_reconcile as reconcile
from corral.server.services import endpoints as ep
from corral.server.services.effects import Effects
from corral.server.store.tables import Endpoint, Workspace

log = logging.getLogger("corral.server.endpoints")

TICK_S = 1.0


def tick(cp: ControlPlane, memory: dict[str, reconcile.Memory]) -> Effects:
    now = cp.clock.now()
    effects = Effects()
    with cp.store.read() as session:
        ids = [
            (e.id, w)
            for e, w in session.execute(
                select(Endpoint, Workspace.name).join(
                    Workspace, Endpoint.workspace_id == Workspace.id
                )
            )
        ]
    for endpoint_id, workspace in ids:
        try:
            with cp.store.transaction() as session:
                endpoint = session.get(Endpoint, endpoint_id)
                if endpoint is None:
                    memory.pop(endpoint_id, None)
                    continue
                load = cp.loads.take(workspace, endpoint.name, now)
                load.held = max(load.held, cp.held.pop((workspace, endpoint.name), 0))
                state = memory.get(endpoint_id)
                if state is None:
                    spec = ep.endpoint_spec(endpoint)
                    policy = autoscale.AutoscalePolicy(
                        target_in_flight=spec.target_in_flight,
                        min_replicas=spec.min_replicas,
                        max_replicas=spec.replica_limit,
                        scale_to_zero_after_s=spec.idle_to_zero_s,
                    )
                    # After a restart, carry on from the stored count, not from scratch.
                    scaler = autoscale.AutoscaleState.initial(
                        policy, now, endpoint.desired_replicas
                    )
                    state = memory[endpoint_id] = reconcile.Memory(scaler)
                effects.merge(reconcile.reconcile(session, endpoint, state, load, now))
        except StaleDataError:
            effects.wake_endpoints = True  # changed under us (a user's update): next tick
    return effects


async def run(cp: ControlPlane) -> None:
    memory: dict[str, reconcile.Memory] = {}
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cp.endpoints_wakeup.wait(), TICK_S)
        cp.endpoints_wakeup.clear()
        try:
            effects = await asyncio.to_thread(tick, cp, memory)
        except Exception:
            log.exception("endpoint reconciliation failed; retrying")
            await asyncio.sleep(1.0)
            continue
        effects.wake_endpoints = False  # not a loop on ourselves
        cp.apply(effects)
