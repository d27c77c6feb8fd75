"""The scheduler controller: snapshot -> core Scheduler -> one transaction -> notify."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from corral.core.scheduler import Scheduler
from corral.server.runtime import ControlPlane
from corral.server.services.effects import Effects
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.tables import Job
from corral.timeouts import wait_event

log = logging.getLogger("corral.server.scheduler")


@dataclass
class Rounds:
    """What one controller keeps between rounds: each round costs O(what changed).

    Both only ever save work: a fresh pair decides exactly the same (the store is the
    truth), so a restarted or newly elected controller simply starts with a fresh one.
    """

    loader: SnapshotLoader = field(default_factory=SnapshotLoader)
    scheduler: Scheduler = field(default_factory=Scheduler)


def schedule_once(cp: ControlPlane, rounds: Rounds | None = None) -> Effects:
    rounds = rounds or Rounds()
    now = cp.clock.now()
    with cp.store.read() as session:
        if session.scalar(select(Job.id).where(Job.state == "pending").limit(1)) is None:
            return Effects()  # nothing to place: skip loading the fleet
        loaded = rounds.loader.load(session, now)
    if not loaded.snapshot.pending:
        return Effects()
    plan = rounds.scheduler.place(loaded.snapshot, now)  # pure: no session open meanwhile
    try:
        with cp.store.transaction() as session:
            return apply_plan(session, plan, loaded, now)
    except StaleDataError:
        # Something changed under the plan; the next round sees it. Nothing half-applied.
        return Effects(wake_scheduler=True)


async def run(cp: ControlPlane) -> None:
    rounds = Rounds()
    while True:
        await wait_event(cp.scheduler_wakeup, cp.options.scheduler_interval_s)
        if cp.options.scheduler_batch_s > 0:
            await asyncio.sleep(cp.options.scheduler_batch_s)
        cp.scheduler_wakeup.clear()
        try:
            effects = await asyncio.to_thread(schedule_once, cp, rounds)
        except Exception:
            log.exception("scheduling round failed; retrying with a fresh snapshot")
            rounds = Rounds()
            await asyncio.sleep(1.0)
            continue
        cp.apply(effects)
