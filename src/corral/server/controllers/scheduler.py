"""The scheduler controller: snapshot -> core.placement.place -> one transaction -> notify."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from corral.core.placement import place
from corral.server.runtime import ControlPlane
from corral.server.services.effects import Effects
from corral.server.services.scheduling import apply_plan, load_snapshot
from corral.server.store.tables import Job

log = logging.getLogger("corral.server.scheduler")


def schedule_once(cp: ControlPlane) -> Effects:
    now = cp.clock.now()
    with cp.store.read() as session:
        if session.scalar(select(Job.id).where(Job.state == "pending").limit(1)) is None:
            return Effects()  # nothing to place: skip loading the fleet
        snapshot, versions = load_snapshot(session, now)
    if not snapshot.pending:
        return Effects()
    plan = place(snapshot, now)  # pure: no session is open while deciding
    try:
        with cp.store.transaction() as session:
            return apply_plan(session, plan, versions, now)
    except StaleDataError:
        # Something changed under the plan; the next round sees it. Nothing half-applied.
        return Effects(wake_scheduler=True)


async def run(cp: ControlPlane) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cp.scheduler_wakeup.wait(), cp.options.scheduler_interval_s)
        cp.scheduler_wakeup.clear()
        try:
            effects = await asyncio.to_thread(schedule_once, cp)
        except Exception:
            log.exception("scheduling round failed; retrying")
            await asyncio.sleep(1.0)
            continue
        cp.apply(effects)
