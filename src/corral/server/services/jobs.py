"""Job use cases: submit, read, cancel, delete (job_logs.py reads logs; settling.py moves
jobs on)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.states import Desired, JobState, ReplicaState
from corral.providers.catalog import Catalog
from corral.server.artifacts.service import check_workdir_format
from corral.server.errors import Conflict, Invalid, NotFound
from corral.server.services import costs, recovery
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.services.job_logs import log_tail
from corral.server.services.names import generate_job_name
from corral.server.services.pages import PageRequest, keyset_page
from corral.server.services.secrets import check_references as check_secret_references
from corral.server.services.specs import job_spec
from corral.server.services.volumes import check_volumes
from corral.server.store.tables import Endpoint, Job, LogChunk, Node, Replica, Workspace
from corral.spec.job import JobSpec
from corral.wire.api import (
    TERMINAL_JOB_STATES,
    JobKind,
    JobView,
    ReplicaView,
)


def workspace_checkpoints(checkpoint_root: str, workspace: str) -> str:
    """The workspace's own checkpoint directory: every checkpoint_dir of its jobs lies in it."""
    return f"{checkpoint_root.rstrip('/')}/{workspace}"


def check_checkpoint_dir(value: str | None, checkpoint_root: str | None, workspace: str) -> None:
    """A path checkpoint_dir must lie inside the workspace's checkpoint directory: nodes
    create it for the workspace's user, and another workspace's must stay out of reach. An
    object-store URI is the user's own business (their credentials decide)."""
    if value is None or checkpoint_root is None:
        return
    is_path = value.startswith("/") or value.startswith("file://")
    if not is_path and "://" in value:
        return
    path = value.removeprefix("file://")
    own = workspace_checkpoints(checkpoint_root, workspace)
    normal = posixpath.normpath(path)
    if ".." in path.split("/") or not (normal == own or normal.startswith(own + "/")):
        message = (
            f"{value!r} is outside this workspace's checkpoint directory: expected a path "
            f"inside {own}/ (or leave it out for {own}/JOB), or an object-store URI such "
            "as s3://bucket/prefix"
        )
        raise Invalid(
            f"checkpoint_dir: {message}",
            [{"path": "checkpoint_dir", "message": message}],
        )


def submit_job(
    session: Session,
    workspace: Workspace,
    spec: JobSpec,
    now: float,
    checkpoint_root: str | None = None,
    *,
    flush: bool = True,
) -> Job:
    """Store a new pending job. `flush=False` leaves the INSERT to the commit (a group
    commit writes a batch's jobs in one statement); the caller then turns an IntegrityError
    from the commit (the name taken meanwhile) into a 409 itself."""
    name = spec.name
    for _ in range(5):
        name = spec.name or generate_job_name()
        # On the connection, not through the ORM: no autoflush (what this batch added so far
        # is written at commit) and less work per call.
        state = (
            session.connection()
            .execute(_STATE_BY_NAME, {"ws": workspace.id, "name": name})
            .scalar()
        )
        if state is None:
            break
        if spec.name:
            raise Conflict(
                f"job '{name}' already exists in workspace '{workspace.name}' (it is "
                f"{state}); choose another name or delete it with "
                f"`corral job delete {name}`",
            )
    assert name is not None
    check_workdir_format(spec.workdir)
    check_checkpoint_dir(spec.checkpoint_dir, checkpoint_root, workspace.name)
    check_secret_references(session, workspace, spec.secrets)
    check_volumes(session, workspace, spec.volumes)
    stored = spec.model_copy(update={"name": name, "workspace": workspace.name})
    job = Job(
        id=new_id(),
        workspace_id=workspace.id,
        name=name,
        spec=stored.model_dump(mode="json"),
        state=JobState.PENDING,
        priority=spec.priority,
        attempt=0,
        restarts=0,
        preemptions=0,
        borrowed=False,
        checkpoint_dir=spec.checkpoint_dir
        or (f"{checkpoint_root.rstrip('/')}/{workspace.name}/{name}" if checkpoint_root else None),
        recovery={},
        submitted_at=now,
        reason="waiting for the scheduler",
    )
    session.add(job)
    if not flush:
        return job
    try:
        session.flush()
    except IntegrityError:
        raise name_taken(name, workspace.name) from None
    return job


def name_taken(name: str, workspace: str) -> Conflict:
    return Conflict(f"job '{name}' already exists in workspace '{workspace}'")


# Built once: every submission runs it.
_STATE_BY_NAME = select(Job.state).where(
    Job.workspace_id == bindparam("ws"), Job.name == bindparam("name")
)


def _job_by_name(session: Session, workspace_id: str, name: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.workspace_id == workspace_id, Job.name == name)
    ).first()


def get_job(session: Session, workspace: Workspace, name: str) -> Job:
    job = _job_by_name(session, workspace.id, name)
    if job is None:
        raise NotFound.of(f"job '{name}' in workspace '{workspace.name}'")
    return job


_CURRENT = (
    select(Replica)
    .where(Replica.job_id == bindparam("job"), Replica.attempt == bindparam("attempt"))
    .order_by(Replica.rank)
)


# session.info key: (job id, attempt) -> its replicas by rank, when a caller loaded them for
# the whole session (nodes.warm_reports) and nothing adds replicas in it.
CURRENT_REPLICAS = "corral.current_replicas"


def current_replicas(session: Session, job: Job) -> list[Replica]:
    loaded = session.info.get(CURRENT_REPLICAS)
    if loaded is not None and (job.id, job.attempt) in loaded:
        return list(loaded[(job.id, job.attempt)])
    return list(session.scalars(_CURRENT, {"job": job.id, "attempt": job.attempt}))


def job_view(
    session: Session,
    job: Job,
    workspace: str,
    *,
    with_tail: bool = True,
    now: float | None = None,
    nodes: dict[str, str] | None = None,
    endpoints: dict[str, str] | None = None,
    catalog: Catalog | None = None,
) -> JobView:
    """`nodes` (id -> name) and `endpoints` (id -> name): already loaded for a whole list.
    `catalog`: the control plane's, to show the job's cost (prices of nodes launched without
    a recorded price); without it no cost is shown."""
    replicas = current_replicas(session, job) if job.attempt else []
    attempts, goodput = (
        recovery.attempt_views(session, job, now if now is not None else job.submitted_at)
        if with_tail and job.attempt  # no attempt yet: no rows to read
        else ([], None)
    )
    if nodes is None:
        nodes = node_names(session, {r.node_id for r in replicas})
    tail: list[str] = []
    if with_tail and job.state == JobState.FAILED:
        failed = [r for r in replicas if r.state == ReplicaState.FAILED] or replicas
        if failed:
            tail = log_tail(session, failed[0].id)
    return JobView(
        name=job.name,
        workspace=workspace,
        state=job.state,
        spec=job_spec(job),
        attempt=job.attempt,
        restarts=job.restarts,
        preemptions=job.preemptions,
        borrowed=job.borrowed,
        exit_code=job.exit_code,
        reason=job.reason,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        replicas=[_replica_view(r, nodes.get(r.node_id)) for r in replicas],
        log_tail=tail,
        step=max((r.step for r in replicas if r.step is not None), default=None),
        checkpoint_step=max(
            (a.checkpoint_step for a in attempts if a.checkpoint_step is not None), default=None
        ),
        attempts=attempts,
        goodput=goodput,
        # Only where one job is shown (with_tail): a list would read every replica's node.
        cost=costs.job_cost(session, job, catalog, now if now is not None else job.submitted_at)
        if with_tail and catalog is not None
        else None,
        endpoint=None
        if job.endpoint_id is None
        else endpoints[job.endpoint_id]
        if endpoints is not None and job.endpoint_id in endpoints
        else session.scalar(select(Endpoint.name).where(Endpoint.id == job.endpoint_id)),
    )


@dataclass(frozen=True)
class JobFilter:
    """What `GET …/jobs` selects. workspaces None: every workspace (a cluster admin's)."""

    workspaces: list[Workspace] | None
    states: frozenset[str] = frozenset()
    kind: JobKind = "all"


def submitted_only(query: Select[Any]) -> Select[Any]:
    """`query` narrowed to jobs someone submitted: not an endpoint's replicas, not a pod's
    runs. One expression, so that no planner takes ix_jobs_endpoint_id or ix_jobs_pod_id for
    it: nearly every job matches, and SQLite then sorted them all (~200 ms at 100,000 jobs
    where walking ix_jobs_submitted takes ~5)."""
    return query.where(func.coalesce(Job.endpoint_id, Job.pod_id).is_(None))


def list_jobs(
    session: Session, which: JobFilter, page: PageRequest
) -> tuple[list[JobView], str | None]:
    """One page of jobs, newest first, and the cursor of the next page (None: no more)."""
    query = select(Job)
    if which.workspaces is not None:
        ids = [w.id for w in which.workspaces]
        query = query.where(
            Job.workspace_id == ids[0] if len(ids) == 1 else Job.workspace_id.in_(ids)
        )
    if which.states:
        query = query.where(Job.state.in_(sorted(which.states)))
    if which.kind == "job":  # a pod's runs are its own business (`corral pod get`)
        query = submitted_only(query)
    elif which.kind == "endpoint-replica":
        query = query.where(Job.endpoint_id.is_not(None))
    found = keyset_page(session, query, [Job.submitted_at, Job.id], page, descending=True)
    return list_views(session, found.items), found.next_cursor


def list_views(session: Session, jobs: list[Job]) -> list[JobView]:
    """Views of many jobs in a handful of queries (not a few per job)."""
    if not jobs:
        return []
    names = dict(
        session.execute(
            select(Workspace.id, Workspace.name).where(
                Workspace.id.in_({j.workspace_id for j in jobs})
            )
        ).all()
    )
    started = [j for j in jobs if j.attempt]
    loaded: dict[tuple[str, int], list[Replica]] = {(j.id, j.attempt): [] for j in started}
    if started:
        for replica in session.scalars(
            select(Replica)
            .where(Replica.job_id.in_([j.id for j in started]))
            .order_by(Replica.rank)
        ):
            key = (replica.job_id, replica.attempt)
            if key in loaded:
                loaded[key].append(replica)
    nodes = node_names(session, {r.node_id for rs in loaded.values() for r in rs})
    endpoint_ids = {j.endpoint_id for j in jobs if j.endpoint_id is not None}
    endpoints: dict[str, str] = (
        dict(
            session.execute(
                select(Endpoint.id, Endpoint.name).where(Endpoint.id.in_(endpoint_ids))
            ).all()
        )
        if endpoint_ids
        else {}
    )
    before = session.info.get(CURRENT_REPLICAS)
    session.info[CURRENT_REPLICAS] = {**(before or {}), **loaded}
    try:
        return [
            job_view(
                session,
                job,
                names[job.workspace_id],
                with_tail=False,
                nodes=nodes,
                endpoints=endpoints,
            )
            for job in jobs
        ]
    finally:
        if before is None:
            session.info.pop(CURRENT_REPLICAS, None)
        else:
            session.info[CURRENT_REPLICAS] = before


def node_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return dict(session.execute(select(Node.id, Node.name).where(Node.id.in_(ids))).all())


def _replica_view(replica: Replica, node: str | None) -> ReplicaView:
    return ReplicaView(
        id=replica.id,
        rank=replica.rank,
        attempt=replica.attempt,
        node=node,
        gpus=list(replica.gpus),
        state=replica.state,
        exit_code=replica.exit_code,
        pid=replica.pid,
        assigned_at=replica.created_at,
        step=replica.step,
        started_at=replica.started_at,
        finished_at=replica.finished_at,
        reason=replica.reason,
    )


def cancel_job(session: Session, job: Job, now: float) -> Effects:
    effects = Effects()
    if job.state in TERMINAL_JOB_STATES or job.state == JobState.CANCELLING:
        return effects
    replicas = [r for r in current_replicas(session, job) if r.state in ACTIVE_REPLICA_STATES]
    if job.state == JobState.PENDING and not replicas:
        job.state = JobState.CANCELLED
        job.reason = "cancelled by user"
        job.finished_at = now
        return effects
    job.state = JobState.CANCELLING
    job.reason = "stopping its replicas"
    job.recheck_at = None
    recovery.close_attempt(session, job, now, None, "cancelled by user")
    effects.merge(stop_replicas(replicas))
    if not replicas:
        job.state = JobState.CANCELLED
        job.finished_at = now
        job.reason = "cancelled by user"
    return effects


def stop_replicas(replicas: list[Replica]) -> Effects:
    effects = Effects()
    for replica in replicas:
        if replica.state in ACTIVE_REPLICA_STATES and replica.desired != Desired.STOP:
            replica.desired = Desired.STOP
            effects.sync_nodes.add(replica.node_id)
    return effects


def delete_job(session: Session, job: Job) -> None:
    if job.state not in TERMINAL_JOB_STATES:
        raise Conflict(
            f"job '{job.name}' is {job.state}; cancel it first (`corral job cancel {job.name}`)",
        )
    active = session.scalar(
        select(func.count())
        .select_from(Replica)
        .where(Replica.job_id == job.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
    )
    if active:
        raise Conflict(
            f"job '{job.name}' still has {active} replica(s) stopping; try again in a few seconds",
        )
    replica_ids = select(Replica.id).where(Replica.job_id == job.id)
    session.execute(delete(LogChunk).where(LogChunk.replica_id.in_(replica_ids)))
    session.execute(delete(Replica).where(Replica.job_id == job.id))
    session.delete(job)
