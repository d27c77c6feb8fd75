"""Write one endpoint's plan (core.endpoints) in the open transaction, guarded.

The plan was decided on facts read in an earlier session. Before anything is written, the
endpoint's row and every replica job it saw must be as they were read (same versions, the
same replica in the same state); if not, nothing is written (`Stale`) and the controller
decides again on fresh facts. Every field of the plan is written here.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from corral.core import endpoints as core
from corral.core.states import LIVE_JOB_STATES
from corral.server.services import endpoints as ep
from corral.server.services.effects import Effects
from corral.server.services.endpoint_reconcile import STATE_KEY, Loaded
from corral.server.services.jobs import cancel_job, current_replicas, submit_job
from corral.server.store.tables import Endpoint, Job, Workspace

log = logging.getLogger("corral.server.endpoints")


class Changed(Exception):
    """What the plan was decided on changed before it was applied; nothing was written."""


def apply(session: Session, loaded: Loaded, plan: core.EndpointPlan, now: float) -> Effects:
    endpoint = session.get(Endpoint, loaded.endpoint_id)
    if endpoint is None or endpoint.version != loaded.version:
        raise Changed(f"endpoint {loaded.endpoint_id} changed since it was read")
    jobs = _check_jobs(session, loaded)
    effects = Effects()
    name = f"{loaded.workspace}/{endpoint.name}"
    if plan.by_replacement:
        log.info("endpoint %s: rolling out by replacement (no node has room for a surge)", name)
    for action in plan.actions:
        match action:
            case core.Start(reason=why):
                workspace = session.get(Workspace, endpoint.workspace_id)
                assert workspace is not None
                job = submit_job(
                    session, workspace, ep.replica_job_spec(endpoint, loaded.spec), now
                )
                job.endpoint_id = endpoint.id
                job.endpoint_revision = endpoint.revision
                effects.wake_scheduler = True
                log.info("endpoint %s: started replica job %s: %s", name, job.name, why)
            case core.Drain(job_id=job_id, reason=why):
                jobs[job_id].draining_at = now
                effects.routes_changed = True
                log.info("endpoint %s: draining replica job %s: %s", name, job_id, why)
            case core.Stop(job_id=job_id, reason=why) | core.Replace(job_id=job_id, reason=why):
                effects.merge(cancel_job(session, jobs[job_id], now))
                verb = "replacing" if isinstance(action, core.Replace) else "stopping"
                log.info("endpoint %s: %s replica job %s: %s", name, verb, job_id, why)
    if plan.delete:
        session.delete(endpoint)
        return effects.merge(Effects(routes_changed=True))
    if endpoint.deleting:
        return effects.merge(Effects(routes_changed=True))  # the gateways stop routing it
    changed = False
    if endpoint.desired_replicas != plan.desired:
        endpoint.desired_replicas = plan.desired
        effects.routes_changed = changed = True
    if plan.reason is not None and endpoint.reason != plan.reason:
        endpoint.reason = plan.reason
        changed = True
    if plan.notes is None:
        return effects
    stored: dict[str, Any] = dict(plan.notes)
    if plan.autoscale is not None:
        stored[STATE_KEY] = plan.autoscale.to_dict()
    if ep.notes(endpoint).get("public") != plan.notes.get("public"):
        effects.routes_changed = True  # the gateways' 503s say it
    if endpoint.autoscale == stored:
        return effects
    if changed or endpoint.autoscale.get("public") != stored.get("public"):
        endpoint.autoscale = stored  # with the rest: a new version
        return effects
    # Only the autoscaler's memory moved (its load window does, every tick under
    # traffic): written without a new version, as a heartbeat is, so that a user's
    # `endpoint update` is not made stale every second. The lease makes this controller
    # its only writer; the WHERE keeps it off a row that changed since it was read.
    session.execute(
        update(Endpoint.__table__)  # type: ignore[arg-type]
        .where(
            Endpoint.__table__.c.id == endpoint.id,
            Endpoint.__table__.c.version == loaded.version,
        )
        .values(autoscale=stored)
    )
    return effects


def _check_jobs(session: Session, loaded: Loaded) -> dict[str, Job]:
    """The endpoint's live replica jobs, each exactly as the facts saw it."""
    jobs = {
        job.id: job
        for job in session.scalars(
            select(Job).where(Job.endpoint_id == loaded.endpoint_id, Job.state.in_(LIVE_JOB_STATES))
        )
    }
    if set(jobs) != set(loaded.seen):
        raise Changed(f"endpoint {loaded.endpoint_id}: its replica jobs changed")
    for job_id, seen in loaded.seen.items():
        job = jobs[job_id]
        if job.version != seen.job_version:
            raise Changed(f"replica job {job_id} changed since it was read")
        replica = next(iter(current_replicas(session, job)), None)
        now_seen = (
            (None, None, None) if replica is None else (replica.id, replica.state, replica.ready)
        )
        if now_seen != (seen.replica_id, seen.replica_state, seen.ready):
            raise Changed(f"replica job {job_id}: its replica changed since it was read")
    return jobs
