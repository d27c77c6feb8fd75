"""Idle stop in the store: the pods the controller looks at, and what its decision writes
(the facts are services/pods.idle_facts, the decision core/pods.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.pods import IdleDecision
from corral.server.services.effects import Effects
from corral.server.services.pods import add_event, stop_pod
from corral.server.store.tables import Pod


def live_pod_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Pod.id).where(Pod.desired != "stopped")))


def apply_idle(session: Session, pod: Pod, decision: IdleDecision, now: float) -> Effects:
    if decision.stop:
        return stop_pod(session, pod, now, decision.reason, None)
    if decision.warn and decision.stop_at is not None:
        pod.idle_warned_at = now
        minutes = max(0.0, (decision.stop_at - now) / 60)
        add_event(
            session,
            pod.id,
            now,
            "idle_warning",
            f"idle: stops in {minutes:.0f} min unless a session opens or its GPUs get busy",
        )
    return Effects()
