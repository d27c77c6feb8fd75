"""The scheduler controller: snapshot -> core Scheduler -> one transaction -> notify.

One object, the fleet: every pending job is decided together, because they compete for
the same GPUs. See core/scheduler/README.md for the decisions themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.placement import PlacementPlan
from corral.core.scheduler import Scheduler
from corral.core.states import JobState
from corral.server.controllers import runner
from corral.server.runtime import ControlPlane
from corral.server.services.effects import Effects
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import Loaded, SnapshotLoader
from corral.server.store.tables import Job

FLEET = "fleet"


@dataclass(frozen=True)
class Placing:
    """The scheduler's plan and the snapshot it was made from (the applier checks the
    versions it saw)."""

    plan: PlacementPlan
    loaded: Loaded


@dataclass
class SchedulerController:
    """What it keeps between rounds makes each round cost O(what changed). Both only
    ever save work: a fresh pair decides exactly the same (the store is the truth), so a
    restarted or newly elected controller simply starts with a fresh one."""

    name: str = "scheduler"
    loader: SnapshotLoader = field(default_factory=SnapshotLoader)
    scheduler: Scheduler = field(default_factory=Scheduler)
    # What the pool controller is doing for waiting jobs (ControlPlane.supply_notes).
    notes: Callable[[], Mapping[str, str]] = dict

    def period_s(self, cp: ControlPlane) -> float:
        return cp.options.scheduler_interval_s

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        return cp.scheduler_wakeup

    def batch_s(self, cp: ControlPlane) -> float:
        return cp.options.scheduler_batch_s

    def prepare(self, cp: ControlPlane) -> None:
        pass

    def keys(self, session: Session, now: float) -> Sequence[str]:
        pending = session.scalar(select(Job.id).where(Job.state == JobState.PENDING).limit(1))
        return [FLEET] if pending is not None else []  # nothing to place: no fleet read

    def load(self, session: Session, key: str, now: float) -> Loaded | None:
        loaded = self.loader.load(session, now)
        return loaded if loaded.snapshot.pending else None

    def decide(self, facts: Loaded, now: float) -> Placing:
        return Placing(self.scheduler.place(facts.snapshot, now), facts)

    def apply(self, session: Session, key: str, plan: Placing, now: float) -> Effects:
        return apply_plan(session, with_notes(plan.plan, self.notes()), plan.loaded, now)

    def failed(self, session: Session, key: str, reason: str) -> None:
        pass  # the fleet has no owner to tell; the log says why, and the next round retries

    def reset(self) -> None:
        self.loader = SnapshotLoader()
        self.scheduler = Scheduler()


def schedule_once(cp: ControlPlane, controller: SchedulerController | None = None) -> Effects:
    """One scheduling round, at once (tests and tools); the server runs `run`."""
    done = runner.Runner(controller or SchedulerController(notes=lambda: cp.supply_notes)).round(cp)
    if done.again:
        done.effects.wake_scheduler = True  # decided on stale facts: decide again
    return done.effects


def with_notes(plan: PlacementPlan, notes: Mapping[str, str]) -> PlacementPlan:
    """The plan with the autoscaler's note after each waiting job's reason."""
    if not notes:
        return plan
    reasons = {
        job: f"{why}; {notes[job]}" if job in notes else why
        for job, why in plan.pending_reasons.items()
    }
    return replace(plan, pending_reasons=reasons)


async def run(cp: ControlPlane) -> None:
    await runner.run(cp, SchedulerController(notes=lambda: cp.supply_notes))
