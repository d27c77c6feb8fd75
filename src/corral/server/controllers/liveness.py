"""The liveness controller: silent nodes become `lost`, and their replicas with them; jobs
past their max_runtime are stopped; jobs that asked to be decided again are.

One object, the fleet. When the server last heard from each node is collected on the
event loop (cp.heard) and written here, in bulk, with the round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from corral.core import liveness as core
from corral.server.controllers import runner
from corral.server.runtime import ControlPlane
from corral.server.services import liveness as store
from corral.server.services.effects import Effects

FLEET = "fleet"


@dataclass(frozen=True)
class Seen:
    heard: dict[str, float]  # written with the plan
    facts: core.LivenessFacts


@dataclass(frozen=True)
class Checking:
    heard: dict[str, float]
    plan: core.LivenessPlan


@dataclass
class LivenessController:
    lost_after_s: float
    alive_since: float
    name: str = "liveness"
    closed_lost_after_s: float | None = None
    # Heard from, not yet written: kept across a failed round, not lost with it.
    heard: dict[str, float] = field(default_factory=dict)
    # Copied from the event loop's bookkeeping (cp.closed, cp.lifelines, cp.lifeline_at).
    closed: dict[str, float] = field(default_factory=dict)
    lifelines: frozenset[str] = frozenset()
    lifeline_at: dict[str, float] = field(default_factory=dict)

    def period_s(self, cp: ControlPlane) -> float:
        period = max(0.2, min(1.0, self.lost_after_s / 5))
        bound = self.closed_lost_after_s
        closed = [at for node, at in cp.closed.items() if node in cp.lifelines]
        if bound is None or not closed:
            return period
        # A closed connection may be a dead host once `bound` has passed: look right then.
        due = min(closed) + bound - cp.clock.now()
        return max(0.02, min(period, due + 0.01)) if due > -period else period

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        return None  # silence has no event: look every period

    def batch_s(self, cp: ControlPlane) -> float:
        return 0.0

    def prepare(self, cp: ControlPlane) -> None:
        taken, cp.heard = cp.heard, {}  # on the loop's thread, where it is written
        for node, at in taken.items():
            self.heard[node] = max(at, self.heard.get(node, at))
        self.closed = dict(cp.closed)
        self.lifelines = frozenset(cp.lifelines)
        self.lifeline_at = dict(cp.lifeline_at)

    def keys(self, session: Session, now: float) -> Sequence[str]:
        return [FLEET]

    def load(self, session: Session, key: str, now: float) -> Seen | None:
        heard = dict(self.heard)
        facts = store.load(session, now, self.lost_after_s, self.alive_since)
        # Heard from but not yet written: not silent.
        nodes = tuple(
            core.NodeSilence(
                n.id,
                max(n.last_heard or 0.0, heard[n.id]) if n.id in heard else n.last_heard,
                closed_at=self.closed.get(n.id),
                lifeline=n.id in self.lifelines,
                lifeline_at=self.lifeline_at.get(n.id),
            )
            for n in facts.nodes
        )
        facts = core.LivenessFacts(
            nodes,
            facts.running,
            facts.recheck,
            facts.lost_after_s,
            facts.alive_since,
            closed_lost_after_s=self.closed_lost_after_s,
        )
        return Seen(heard, facts)

    def decide(self, facts: Seen, now: float) -> Checking:
        return Checking(facts.heard, core.decide(facts.facts, now))

    def apply(self, session: Session, key: str, plan: Checking, now: float) -> Effects:
        effects = store.apply_plan(session, plan.plan, plan.heard, now)
        for node, at in plan.heard.items():  # written: forget unless heard again since
            if self.heard.get(node) == at:
                del self.heard[node]
        return effects

    def failed(self, session: Session, key: str, reason: str) -> None:
        pass  # the log says why; the next round tries again with what it kept

    def reset(self) -> None:
        pass


async def run(cp: ControlPlane) -> None:
    options = cp.options
    closed = min(options.node_closed_lost_after_s, options.node_lost_after_s)
    await runner.run(
        cp,
        LivenessController(options.node_lost_after_s, cp.started_at, closed_lost_after_s=closed),
    )
