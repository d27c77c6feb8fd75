"""The liveness controller: silent nodes become `lost`, and their replicas with them; jobs
past their max_runtime are stopped."""

from __future__ import annotations

import asyncio
import logging

from corral.server.runtime import ControlPlane
from corral.server.services.effects import Effects
from corral.server.services.nodes import mark_lost_nodes, record_heard
from corral.server.services.settling import recheck_jobs, stop_overdue_jobs

log = logging.getLogger("corral.server.liveness")


def check_once(cp: ControlPlane, heard: dict[str, float] | None = None) -> Effects:
    now = cp.clock.now()
    with cp.store.transaction() as session:
        record_heard(session, heard or {})
        effects = mark_lost_nodes(session, now, cp.options.node_lost_after_s, cp.started_at)
        effects.merge(stop_overdue_jobs(session, now))
        return effects.merge(recheck_jobs(session, now))


async def run(cp: ControlPlane) -> None:
    period = max(0.2, min(1.0, cp.options.node_lost_after_s / 5))
    while True:
        await asyncio.sleep(period)
        heard, cp.heard = cp.heard, {}  # on the loop's thread, where it is written
        try:
            effects = await asyncio.to_thread(check_once, cp, heard)
        except Exception:
            log.exception("liveness check failed; retrying")
            for node, at in heard.items():  # keep what was not written
                cp.heard.setdefault(node, at)
            continue
        cp.apply(effects)
