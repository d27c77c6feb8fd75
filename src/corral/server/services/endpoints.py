"""Endpoint use cases: deploy, update, delete, views; the gateway's route table.

An endpoint's replicas are jobs of one replica each (`jobs.endpoint_id`), so placement,
preemption, logs and node failure handling are the jobs' own. Each listens on $PORT, which
is its job's master port: the scheduler already keeps those unique per node.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.core.lifecycle import LIVE_JOB_STATES
from corral.core.states import (
    EndpointReplicaState,
    EndpointState,
    JobState,
    ReplicaState,
)
from corral.server.auth import Principal
from corral.server.errors import Conflict, Forbidden, NotFound
from corral.server.services.names import generate_job_name
from corral.server.services.secrets import check_references as check_secret_references
from corral.server.store.tables import Endpoint, Job, Node, Replica, Token, Workspace
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec
from corral.spec.limits import STORED
from corral.wire.agent import Probe
from corral.wire.api import EndpointReplicaView, EndpointView
from corral.wire.gateway import REASON_MAX, EndpointRoute, ReplicaRoute, RouteTable

log = logging.getLogger("corral.server.endpoints")


def deploy(session: Session, workspace: Workspace, spec: EndpointSpec, now: float) -> Endpoint:
    name = spec.name or generate_job_name()
    if find(session, workspace, name) is not None:
        raise Conflict(
            f"endpoint '{name}' already exists in workspace '{workspace.name}'; roll out a new "
            f"spec with `corral endpoint update`",
        )
    if session.scalars(select(Endpoint.id).where(Endpoint.name == name)).first() is not None:
        # The name is the URL (/ep/NAME/, NAME.<domain>): one namespace for the gateway.
        raise Conflict(f"endpoint name '{name}' is taken by another workspace; choose another")
    check_secret_references(session, workspace, spec.secrets)
    stored = spec.model_copy(update={"name": name, "workspace": workspace.name})
    endpoint = Endpoint(
        id=secrets.token_hex(16),
        workspace_id=workspace.id,
        name=name,
        spec=stored.model_dump(mode="json"),
        revision=1,
        desired_replicas=spec.min_replicas,
        autoscale={},
        reason="starting",
        deleting=False,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"endpoint '{name}' already exists in workspace '{workspace.name}'"
        ) from None
    return endpoint


def update(session: Session, endpoint: Endpoint, spec: EndpointSpec, now: float) -> Endpoint:
    """Roll out a new spec: a new revision's replicas replace the old ones once ready."""
    if endpoint.deleting:
        raise Conflict(f"endpoint '{endpoint.name}' is being deleted")
    stored = spec.model_copy(
        update={"name": endpoint.name, "workspace": endpoint_spec(endpoint).workspace}
    )
    if stored.model_dump(mode="json") == endpoint.spec:
        return endpoint  # nothing changed: no new revision
    workspace = session.get(Workspace, endpoint.workspace_id)
    assert workspace is not None
    check_secret_references(session, workspace, spec.secrets)
    endpoint.spec = stored.model_dump(mode="json")
    endpoint.revision += 1
    endpoint.updated_at = now
    endpoint.reason = f"rolling out revision {endpoint.revision}"
    return endpoint


def delete(endpoint: Endpoint, now: float) -> None:
    """Drain and stop its replicas; the controller removes the endpoint once they are gone."""
    endpoint.deleting = True
    endpoint.updated_at = now
    endpoint.reason = "deleting: draining its replicas"


def find(session: Session, workspace: Workspace, name: str) -> Endpoint | None:
    return session.scalars(
        select(Endpoint).where(Endpoint.workspace_id == workspace.id, Endpoint.name == name)
    ).first()


def get(session: Session, workspace: Workspace, name: str) -> Endpoint:
    endpoint = find(session, workspace, name)
    if endpoint is None:
        raise NotFound.of(f"endpoint '{name}' in workspace '{workspace.name}'")
    return endpoint


def endpoint_spec(endpoint: Endpoint) -> EndpointSpec:
    return EndpointSpec.model_validate(endpoint.spec, context=STORED)


def replica_job_spec(endpoint: Endpoint, spec: EndpointSpec) -> JobSpec:
    """The job that runs one replica of `endpoint` at its current revision."""
    suffix = secrets.token_hex(3)
    base = endpoint.name[: 63 - len(f"-r{endpoint.revision}-{suffix}")].rstrip("-")
    # Built from a spec already accepted: the bounds in force when it was deployed hold,
    # not today's (an endpoint stored under looser ones must still get replicas).
    return JobSpec.model_validate(
        {
            "name": f"{base}-r{endpoint.revision}-{suffix}",
            "workspace": spec.workspace,
            "entrypoint": spec.argv(),
            "env": dict(spec.env),
            "secrets": dict(spec.secrets),
            "working_dir": spec.working_dir,
            "files": dict(spec.files),
            "resources": spec.resources,
            "replicas": 1,
            "max_restarts": 0,  # the endpoint controller replaces a dead replica
            "priority": spec.priority,
        },
        context=STORED,
    )


def probe_for(spec: EndpointSpec, port: int) -> Probe:
    r = spec.readiness
    return Probe(
        port=port,
        readiness_path=r.path,
        liveness_path=r.liveness_path,
        failure_threshold=r.failure_threshold,
        # Fast while loading, so a model that just became ready takes traffic within 0.25 s.
        period_s=0.25,
    )


# -- views -------------------------------------------------------------------------------


def replica_rows(
    session: Session, endpoint_ids: list[str]
) -> dict[str, list[tuple[Job, Replica | None, Node | None]]]:
    """Each endpoint's live replica jobs with their current replica and node."""
    result: dict[str, list[tuple[Job, Replica | None, Node | None]]] = {e: [] for e in endpoint_ids}
    if not endpoint_ids:
        return result
    jobs = session.scalars(
        select(Job)
        .where(Job.endpoint_id.in_(endpoint_ids), Job.state.in_(LIVE_JOB_STATES))
        .order_by(Job.submitted_at)
    ).all()
    replicas = {
        (r.job_id, r.attempt): r
        for r in session.scalars(select(Replica).where(Replica.job_id.in_([j.id for j in jobs])))
    }
    node_ids = {r.node_id for r in replicas.values()}
    nodes = (
        {n.id: n for n in session.scalars(select(Node).where(Node.id.in_(node_ids)))}
        if node_ids
        else {}
    )
    for job in jobs:
        replica = replicas.get((job.id, job.attempt))
        node = nodes.get(replica.node_id) if replica is not None else None
        assert job.endpoint_id is not None
        result[job.endpoint_id].append((job, replica, node))
    return result


def replica_state(job: Job, replica: Replica | None) -> EndpointReplicaState:
    """starting | ready | unready | draining, as `corral endpoint get` shows it."""
    if job.draining_at is not None or job.state == JobState.CANCELLING:
        return EndpointReplicaState.DRAINING
    if replica is None or replica.state != ReplicaState.RUNNING:
        return EndpointReplicaState.STARTING
    if replica.ready:
        return EndpointReplicaState.READY
    return (
        EndpointReplicaState.UNREADY
        if replica.ready_at is not None
        else EndpointReplicaState.STARTING
    )


def replica_reason(job: Job, replica: Replica | None) -> str | None:
    """Why a replica does not serve: the scheduler's reason while it waits for a node, its
    readiness probe's words while running unready; None once it serves."""
    if job.state == JobState.PENDING:
        return job.reason
    if job.draining_at is not None or job.state == JobState.CANCELLING:
        return None
    if replica is None or replica.state != ReplicaState.RUNNING or replica.ready:
        return None
    return replica.reason


def notes(endpoint: Endpoint) -> dict[str, str]:
    """What the controller keeps beside the reason (in the `autoscale` column): the
    autoscaler's reckoning and the reason a gateway may show callers."""
    stored = endpoint.autoscale if isinstance(endpoint.autoscale, dict) else {}
    return {k: v for k, v in stored.items() if isinstance(v, str)}


def replica_url(job: Job, node: Node | None) -> str | None:
    if node is None or job.master_port is None:
        return None
    return f"http://{node.address or '127.0.0.1'}:{job.master_port}"


def endpoint_view(
    session: Session,
    endpoint: Endpoint,
    workspace: str,
    rows: list[tuple[Job, Replica | None, Node | None]] | None = None,
) -> EndpointView:
    if rows is None:
        rows = replica_rows(session, [endpoint.id])[endpoint.id]
    spec = endpoint_spec(endpoint)
    replicas = [
        EndpointReplicaView(
            job=job.name,
            revision=job.endpoint_revision or 0,
            state=replica_state(job, replica),
            node=None if node is None else node.name,
            url=replica_url(job, node),
            started_at=None if replica is None else replica.started_at,
            ready_at=None if replica is None else replica.ready_at,
            reason=replica_reason(job, replica),
        )
        for job, replica, node in rows
    ]
    ready = sum(1 for r in replicas if r.state == EndpointReplicaState.READY)
    if endpoint.deleting:
        state = EndpointState.DELETING
    elif ready == 0 and endpoint.desired_replicas == 0:
        state = EndpointState.SCALED_TO_ZERO
    elif any(r.revision != endpoint.revision for r in replicas):
        state = EndpointState.UPDATING
    elif ready == 0:
        state = EndpointState.STARTING
    elif ready < endpoint.desired_replicas:
        state = EndpointState.SCALING
    else:
        state = EndpointState.READY
    return EndpointView(
        name=endpoint.name,
        workspace=workspace,
        state=state,
        path=f"/ep/{endpoint.name}/",
        revision=endpoint.revision,
        desired_replicas=endpoint.desired_replicas,
        ready_replicas=ready,
        min_replicas=spec.min_replicas,
        max_replicas=spec.replica_limit,
        reason=endpoint.reason,
        autoscaler=notes(endpoint).get("autoscaler"),
        spec=spec,
        replicas=replicas,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def list_views(session: Session, workspace: Workspace) -> list[EndpointView]:
    endpoints = session.scalars(
        select(Endpoint).where(Endpoint.workspace_id == workspace.id).order_by(Endpoint.name)
    ).all()
    rows = replica_rows(session, [e.id for e in endpoints])
    return [endpoint_view(session, e, workspace.name, rows[e.id]) for e in endpoints]


# -- the gateway's route table -------------------------------------------------------------


def route_table(session: Session, version: int, domain: str | None) -> RouteTable:
    endpoints = session.scalars(select(Endpoint).order_by(Endpoint.name)).all()
    rows = replica_rows(session, [e.id for e in endpoints])
    workspaces = {w.id: w.name for w in session.scalars(select(Workspace))}
    tokens: dict[str, list[str]] = {}
    for workspace_id, token_hash in session.execute(select(Token.workspace_id, Token.token_hash)):
        if workspace_id is not None:
            tokens.setdefault(workspace_id, []).append(token_hash)
    admin = [
        h
        for (h,) in session.execute(
            select(Token.token_hash).where(Token.workspace_id.is_(None), Token.role == "admin")
        )
    ]
    routes: list[EndpointRoute] = []
    for endpoint in endpoints:
        try:
            spec = endpoint_spec(endpoint)
        except ValueError:
            # Its own controller reports it (quarantined); every other endpoint still routes.
            log.exception("endpoint %s: spec unreadable; left out of the routes", endpoint.id)
            continue
        replicas = []
        for job, replica, node in rows[endpoint.id]:
            url = replica_url(job, node)
            if (
                url is None
                or replica is None
                or replica.state not in (ReplicaState.ASSIGNED, ReplicaState.RUNNING)
            ):
                continue
            state = replica_state(job, replica)
            wire_state = {"ready": "ready", "draining": "draining"}.get(state, "starting")
            replicas.append(ReplicaRoute(id=replica.id, url=url, state=wire_state))
        routes.append(
            EndpointRoute(
                name=endpoint.name,
                workspace=workspaces.get(endpoint.workspace_id, "?"),
                auth=spec.auth,
                token_sha256=sorted([*tokens.get(endpoint.workspace_id, []), *admin])
                if spec.auth == "workspace"
                else [],
                replicas=replicas,
                max_held=spec.max_held,
                hold_timeout_s=spec.hold_timeout,
                drain_timeout_s=spec.drain_timeout,
                affinity_header=spec.affinity_header,
                reason=(notes(endpoint).get("public") or "")[:REASON_MAX] or None,
            )
        )
    return RouteTable(version=version, domain=domain, endpoints=routes)


def check_gateway_caller(caller: Principal) -> None:
    if not caller.cluster_admin:
        raise Forbidden("the route table is for gateways: use a cluster admin token")
