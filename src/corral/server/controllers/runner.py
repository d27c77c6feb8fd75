"""One loop for every controller: load facts, let core decide, apply the plan guarded,
act on its effects after commit.

A controller is the four steps for one kind of object (see `Controller`); this module is
everything around them that every controller needs the same: the wake-up and the period,
one transaction per object, per-object error isolation with backoff (one workspace's
broken object must not stall everyone's), a plan that went stale being retried at once,
rounds skipped while this server does not hold the controller lease, and a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client import Histogram
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from corral.server.runtime import ControlPlane
from corral.server.services.effects import Effects
from corral.timeouts import wait_event

log = logging.getLogger("corral.server.controllers")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
ROUND_FAILED_PAUSE_S = 1.0  # after a round failed outside any one object (the store is down)

# Registered in no registry here: each app's /metrics registry adds it (server/metrics.py),
# as tests make many apps in one process and the global registry refuses a second name.
ROUND_SECONDS = Histogram(
    "corral_controller_round_seconds",
    "Time one controller round took (load, decide and apply for all its objects).",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=None,
)

FactsT = TypeVar("FactsT")
PlanT = TypeVar("PlanT")


class Stale(Exception):
    """The plan was decided on facts that changed before it could be applied (a version
    or a node's condition no longer matches). Nothing was written; the next round sees
    the new facts. SQLAlchemy's StaleDataError (a version check) means the same."""


class Controller(Protocol[FactsT, PlanT]):
    """What makes a controller: four steps for one kind of object, and its pace.

    `decide` is pure (it calls into `corral.core` and reads neither the store nor the
    clock), so the simulator runs the same decisions as the server.
    """

    name: str

    def period_s(self, cp: ControlPlane) -> float:
        """Look again after this long even if nothing woke the controller."""
        ...

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        """Set by whoever changed something this controller should look at now."""
        ...

    def batch_s(self, cp: ControlPlane) -> float:
        """After a wake-up, wait this long for more to arrive (decided in one round)."""
        ...

    def prepare(self, cp: ControlPlane) -> None:
        """On the event loop's thread, before a round: take what the loop collected."""
        ...

    def keys(self, session: Session, now: float) -> Sequence[str]:
        """The objects this round looks at, each decided and applied on its own."""
        ...

    def load(self, session: Session, key: str, now: float) -> FactsT | None:
        """What `decide` needs to know of one object (None: nothing to do for it)."""
        ...

    def decide(self, facts: FactsT, now: float) -> PlanT:
        """Pure: the plan for one object."""
        ...

    def apply(self, session: Session, key: str, plan: PlanT, now: float) -> Effects:
        """Write the plan in the open transaction, checking that what it was decided on
        still holds (versions, node conditions); raise Stale if it does not."""
        ...

    def failed(self, session: Session, key: str, reason: str) -> None:
        """Say why an object could not be reconciled, where its owner looks."""
        ...

    def reset(self) -> None:
        """Forget whatever was kept between rounds (after an unexpected error)."""
        ...


class Quarantine:
    """Objects whose reconciliation raised: each is retried after a delay that doubles,
    while every other object carries on."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._delay: dict[str, float] = {}

    def waiting(self, key: str, now: float) -> bool:
        return now < self._until.get(key, 0.0)

    def failed(self, key: str, now: float) -> float:
        delay = min(MAX_BACKOFF_S, self._delay.get(key, FIRST_BACKOFF_S / 2) * 2)
        self._delay[key] = delay
        self._until[key] = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._until.pop(key, None)
        self._delay.pop(key, None)

    def keep_only(self, keys: set[str]) -> None:
        """Forget objects that no longer exist (deleted while quarantined)."""
        for gone in set(self._until) - keys:
            self.succeeded(gone)

    def __contains__(self, key: str) -> bool:
        return key in self._until


@dataclass
class Round:
    """What one round did: the effects to act on, and whether to go again at once."""

    effects: Effects = field(default_factory=Effects)
    again: bool = False  # a plan went stale: decide again on fresh facts
    failed: list[str] = field(default_factory=list)


@dataclass
class Runner(Generic[FactsT, PlanT]):
    controller: Controller[FactsT, PlanT]
    quarantine: Quarantine = field(default_factory=Quarantine)

    def round(self, cp: ControlPlane) -> Round:
        """One pass over the controller's objects (in a worker thread: it does I/O)."""
        controller = self.controller
        done = Round()
        now = cp.clock.now()
        with cp.store.read() as session:
            keys = list(controller.keys(session, now))
        self.quarantine.keep_only(set(keys))
        for key in keys:
            if self.quarantine.waiting(key, now):
                continue
            try:
                with cp.store.read() as session:
                    facts = controller.load(session, key, now)
                if facts is None:
                    self.quarantine.succeeded(key)
                    continue
                plan = controller.decide(facts, now)  # no session open meanwhile
                with cp.store.transaction() as session:
                    done.effects.merge(controller.apply(session, key, plan, now))
            except (Stale, StaleDataError):
                done.again = True  # changed under the plan: nothing half-applied
            except Exception as exc:
                delay = self.quarantine.failed(key, now)
                done.failed.append(key)
                log.exception(
                    "%s: %s failed; retrying it in %g s, the others carry on",
                    controller.name,
                    key,
                    delay,
                )
                controller.reset()
                self._record(cp, key, exc, delay)
            else:
                self.quarantine.succeeded(key)
        return done

    def _record(self, cp: ControlPlane, key: str, error: Exception, delay: float) -> None:
        reason = (
            f"corral could not reconcile this ({type(error).__name__}: {str(error)[:300]}); "
            f"retrying in {delay:g} s"
        )
        try:
            with cp.store.transaction() as session:
                self.controller.failed(session, key, reason)
        except Exception:  # the reason is a courtesy; the log has the error
            log.warning("%s: could not record why %s failed", self.controller.name, key)


async def run(
    cp: ControlPlane,
    controller: Controller[FactsT, PlanT],
    after: Callable[[Round], Awaitable[None]] | None = None,
) -> None:
    """The controller's loop, until cancelled. Every wait is cancellable (timeouts.py):
    shutdown never waits for a period to pass. `after`: what the controller does once a
    round's transactions are over (the pool controller's provider calls); a failure there
    is treated as a failed round."""
    runner = Runner(controller)
    wakeup = controller.wakeup(cp)
    again = False
    while True:
        if not again:
            period = controller.period_s(cp)
            if wakeup is None:
                await asyncio.sleep(period)
            else:
                if await wait_event(wakeup, period):
                    batch = controller.batch_s(cp)
                    if batch > 0:
                        await asyncio.sleep(batch)
                wakeup.clear()
        again = False
        if not cp.leads():
            continue  # another server runs the controllers on this store
        controller.prepare(cp)
        try:
            with ROUND_SECONDS.labels(controller.name).time():
                done = await asyncio.to_thread(runner.round, cp)
            cp.apply(done.effects)
            again = done.again
            if after is not None:
                await after(done)
        except Exception:
            log.exception("%s: round failed; retrying", controller.name)
            controller.reset()
            await asyncio.sleep(ROUND_FAILED_PAUSE_S)
            continue
