"""The endpoint controller: each tick (or at once on a wake-up), every endpoint is scaled to
its load and reconciled — replicas started, replaced, rolled out, drained and stopped."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from corral.core import autoscale
from corral.server.runtime import ControlPlane
from corral.server.services import endpoint_reconcile as reconcile
from corral.server.services import endpoints as ep
from corral.server.services.effects import Effects
from corral.server.store.tables import Endpoint, Workspace
from corral.timeouts import wait_event

log = logging.getLogger("corral.server.endpoints")

TICK_S = 1.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


class Quarantine:
    """Endpoints whose reconciliation raised: each is retried after a delay that doubles,
    while every other endpoint carries on. One bad object must not stall the controller
    (one workspace's broken endpoint would otherwise stop everyone's)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._delay: dict[str, float] = {}

    def waiting(self, endpoint_id: str, now: float) -> bool:
        return now < self._until.get(endpoint_id, 0.0)

    def failed(self, endpoint_id: str, now: float) -> float:
        delay = min(MAX_BACKOFF_S, self._delay.get(endpoint_id, FIRST_BACKOFF_S / 2) * 2)
        self._delay[endpoint_id] = delay
        self._until[endpoint_id] = now + delay
        return delay

    def succeeded(self, endpoint_id: str) -> None:
        self._until.pop(endpoint_id, None)
        self._delay.pop(endpoint_id, None)

    def keep_only(self, endpoint_ids: set[str]) -> None:
        """Forget endpoints that no longer exist (deleted while quarantined)."""
        for gone in set(self._until) - endpoint_ids:
            self.succeeded(gone)


def _record_failure(cp: ControlPlane, endpoint_id: str, error: Exception, delay: float) -> None:
    """Say why in the endpoint's status, where its owner looks (`corral endpoint get`)."""
    reason = (
        f"corral could not reconcile this endpoint ({type(error).__name__}: "
        f"{str(error)[:300]}); retrying in {delay:g} s"
    )
    try:
        with cp.store.transaction() as session:
            endpoint = session.get(Endpoint, endpoint_id)
            if endpoint is not None and endpoint.reason != reason:
                endpoint.reason = reason
    except Exception:  # the reason is a courtesy; the log has the error
        log.warning("could not record the failure of endpoint %s", endpoint_id, exc_info=True)


def tick(
    cp: ControlPlane, memory: dict[str, reconcile.Memory], quarantine: Quarantine | None = None
) -> Effects:
    quarantine = quarantine or Quarantine()
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
    quarantine.keep_only({endpoint_id for endpoint_id, _ in ids})
    for endpoint_id, workspace in ids:
        if quarantine.waiting(endpoint_id, now):
            continue
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
        except Exception as exc:
            memory.pop(endpoint_id, None)
            delay = quarantine.failed(endpoint_id, now)
            log.exception(
                "endpoint %s (workspace %s) failed to reconcile; retrying it in %g s, "
                "the others carry on",
                endpoint_id,
                workspace,
                delay,
            )
            _record_failure(cp, endpoint_id, exc, delay)
        else:
            quarantine.succeeded(endpoint_id)
    return effects


async def run(cp: ControlPlane) -> None:
    memory: dict[str, reconcile.Memory] = {}
    quarantine = Quarantine()
    while True:
        await wait_event(cp.endpoints_wakeup, TICK_S)
        cp.endpoints_wakeup.clear()
        try:
            effects = await asyncio.to_thread(tick, cp, memory, quarantine)
        except Exception:
            log.exception("endpoint reconciliation failed; retrying")
            await asyncio.sleep(1.0)
            continue
        effects.wake_endpoints = False  # not a loop on ourselves
        cp.apply(effects)
