"""Idle stop's facts, read from the store: the pod's open sessions, its idle clock, and
the utilization its node last reported for its GPUs (core/pods.py decides)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.pods import IdleDecision, IdleFacts, decide_idle
from corral.core.states import JobState
from corral.server.services.effects import Effects
from corral.server.services.jobs import current_replicas
from corral.server.services.pods import add_event, open_sessions, stop_pod, stored_spec
from corral.server.store.tables import Job, Node, Pod


def idle_facts(session: Session, pod: Pod) -> IdleFacts | None:
    """None: not running, so not idle-stoppable."""
    job = session.get(Job, pod.job_id) if pod.job_id else None
    if pod.desired != "running" or job is None or job.state != JobState.RUNNING:
        return None
    spec = stored_spec(pod)
    util: list[int | None] = []
    started = job.started_at or pod.created_at
    for replica in current_replicas(session, job):
        started = replica.started_at or started
        node = session.get(Node, replica.node_id)
        reported = {
            g.get("index"): g.get("utilization_pct")
            for g in ((node.health_signals or {}).get("gpus") or [] if node else [])
        }
        for index in replica.gpus:
            value = reported.get(index)
            util.append(None if value is None else round(float(value)))
    return IdleFacts(
        idle_stop_s=spec.idle_stop,
        gpu_threshold=spec.idle_gpu_util,
        open_sessions=open_sessions(session, pod.id),
        last_activity_at=max(pod.last_activity_at or 0.0, started),
        gpu_util=util,
        warned_at=pod.idle_warned_at,
    )


def idle_stop_at(session: Session, pod: Pod, now: float) -> float | None:
    facts = idle_facts(session, pod)
    return None if facts is None else decide_idle(facts, now).stop_at


def running_pod_ids(session: Session) -> list[str]:
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
