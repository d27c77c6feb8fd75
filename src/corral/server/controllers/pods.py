"""The pod controller: idle stop, and removing deleted pods once their run has stopped.

load     services/pod_idle.py: open sessions, the idle clock, GPU utilization
decide   core/pods.py: stop, warn, or nothing (pure)
apply    stop the pod's job (its GPUs go back to the pool), or record the warning
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import pods as core
from corral.core.states import TERMINAL_JOB_STATES
from corral.server.controllers import runner
from corral.server.runtime import ControlPlane
from corral.server.services import pod_idle
from corral.server.services.effects import Effects
from corral.server.services.jobs import delete_job
from corral.server.services.pods import add_event, idle_facts
from corral.server.store.tables import Job, Pod

TICK_S = 5.0


@dataclass(frozen=True)
class Facts:
    version: int
    deleted_and_done: bool
    idle: core.IdleFacts | None


@dataclass(frozen=True)
class Plan:
    version: int
    remove: bool
    idle: core.IdleDecision


@dataclass
class PodController:
    name: str = "pods"

    def period_s(self, cp: ControlPlane) -> float:
        return min(TICK_S, cp.options.heartbeat_interval_s * 5)

    def wakeup(self, cp: ControlPlane) -> asyncio.Event | None:
        return cp.pods_wakeup

    def batch_s(self, cp: ControlPlane) -> float:
        return 0.0

    def prepare(self, cp: ControlPlane) -> None:
        pass

    def keys(self, session: Session, now: float) -> Sequence[str]:
        return pod_idle.live_pod_ids(session)

    def load(self, session: Session, key: str, now: float) -> Facts | None:
        pod = session.get(Pod, key)
        if pod is None:
            return None
        if pod.desired == "deleted":
            job = session.get(Job, pod.job_id) if pod.job_id else None
            done = job is None or job.state in TERMINAL_JOB_STATES
            return Facts(pod.version, done, None) if done else None
        facts = idle_facts(session, pod)
        return None if facts is None else Facts(pod.version, False, facts)

    def decide(self, facts: Facts, now: float) -> Plan:
        idle = core.decide_idle(facts.idle, now) if facts.idle else core.IdleDecision()
        return Plan(facts.version, facts.deleted_and_done, idle)

    def apply(self, session: Session, key: str, plan: Plan, now: float) -> Effects:
        pod = session.get(Pod, key)
        if pod is None or pod.version != plan.version:
            raise runner.Stale(f"pod {key} changed")
        if plan.remove:
            # Its runs go with it: they are not jobs anyone submitted.
            for job in session.scalars(select(Job).where(Job.pod_id == key)):
                delete_job(session, job)
            session.delete(pod)
            return Effects()
        return pod_idle.apply_idle(session, pod, plan.idle, now)

    def failed(self, session: Session, key: str, reason: str) -> None:
        if session.get(Pod, key) is not None:
            # The runner gives no clock here; the wall clock is what the event shows.
            add_event(session, key, time.time(), "error", reason)

    def reset(self) -> None:
        pass


async def run(cp: ControlPlane) -> None:
    await runner.run(cp, PodController())
