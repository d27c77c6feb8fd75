"""The desired set a node is sent: each replica with its argv and environment."""

from __future__ import annotations

import logging
import posixpath
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from corral.core.states import Desired, ReplicaState
from corral.server.secretbox import SecretBox
from corral.server.services.endpoints import probe_for
from corral.server.services.jobs import workspace_checkpoints
from corral.server.services.secrets import secret_values
from corral.server.services.specs import specs_by_id
from corral.server.store.tables import Endpoint, Job, Node, Replica, Workspace
from corral.spec.code import code_fields
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec
from corral.spec.limits import STORED
from corral.wire.agent import ReplicaAssignment, VolumeMount

log = logging.getLogger("corral.server.assignments")


def torchrun_env(
    *, rank: int, nnodes: int, nproc_per_node: int, master_addr: str, master_port: int
) -> dict[str, str]:
    """The torch.distributed environment for one replica.

    WORLD_SIZE counts processes (NNODES x NPROC_PER_NODE) and RANK is the replica's first
    global rank, so a one-process-per-replica script can `init_process_group("env://")`
    directly, and a script launched with torchrun gets its flags from the same variables.
    """
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NNODES": str(nnodes),
        "NODE_RANK": str(rank),
        "NPROC_PER_NODE": str(nproc_per_node),
        "WORLD_SIZE": str(nnodes * nproc_per_node),
        "RANK": str(rank * nproc_per_node),
        "LOCAL_RANK": "0",
    }


# Built once: a node's desired set is read after every change on it, and building the
# statement anew each time cost more than running it.
# Columns, not ORM objects; the spec comes from the parsed-spec cache.
RUNNING = ReplicaState.RUNNING

_ON_NODE = (
    select(
        Replica.id,
        Replica.rank,
        Replica.attempt,
        Replica.gpus,
        Replica.desired,
        Replica.state,
        Job.id.label("job_id"),
        Job.name.label("job"),
        Job.next_replicas,
        Job.master_port,
        Job.checkpoint_dir,
        Job.endpoint_id,
        Job.pod_id,
        Job.workspace_id,
        Workspace.name.label("workspace"),
        Workspace.uid_index,
    )
    .join(Job, Replica.job_id == Job.id)
    .join(Workspace, Job.workspace_id == Workspace.id)
    .where(
        Replica.node_id == bindparam("node"),
        Replica.state.in_((ReplicaState.ASSIGNED, ReplicaState.RUNNING)),
    )
    .order_by(Replica.created_at, Replica.rank)
)
_MASTERS = (
    select(Replica.job_id, Replica.attempt, Node.address)
    .join(Node, Replica.node_id == Node.id)
    .where(Replica.job_id.in_(bindparam("jobs", expanding=True)), Replica.rank == 0)
)


def build_assignments(
    session: Session,
    node_id: str,
    checkpoint_root: str | None = None,
    secrets: SecretBox | None = None,
    *,
    wheelhouse: bool = False,
) -> list[ReplicaAssignment]:
    """`secrets` opens the values of the workspace secrets that specs name; they go into
    the environment of replicas not yet started, the only place a value ever leaves the
    server. Without it (or with a secret deleted meanwhile) the variable is left out.
    `wheelhouse`: this server serves a package index (api/wheels.py) for environments."""
    active = session.execute(_ON_NODE, {"node": node_id}).all()
    rows = [row for row in active if row.desired == Desired.RUN]
    # GPUs still held by replicas told to stop (a preemption victim on its way out).
    releasing = {gpu for row in active if row.desired != Desired.RUN for gpu in row.gpus}
    masters = _master_addresses(session, [(row.job_id, row.attempt) for row in rows])
    specs = specs_by_id(session, sorted({row.job_id for row in rows}))
    values = (
        secret_values(
            session,
            secrets,
            (
                (row.workspace_id, name)
                for row in rows
                if row.state != ReplicaState.RUNNING
                for name in specs[row.job_id].secrets.values()
            ),
        )
        if secrets is not None
        else {}
    )
    result: list[ReplicaAssignment] = []
    for replica in rows:
        if releasing.intersection(replica.gpus):
            continue  # placed over a preemption victim still stopping: wait for its GPUs
        try:
            spec = specs[replica.job_id]
            result.append(
                _assignment(session, replica, spec, masters, values, checkpoint_root, wheelhouse)
            )
        except Exception:
            # One replica whose job or endpoint can no longer be read (a spec stored
            # before today's checks, a bug) must not cut its node off: the others still
            # get their desired set. A started one is kept as it is on the node.
            log.exception(
                "replica %s of job %s: cannot build its assignment; %s",
                replica.id,
                replica.job,
                "kept as it runs"
                if replica.state == ReplicaState.RUNNING
                else "not started for now",
            )
            if replica.state == ReplicaState.RUNNING:
                result.append(_kept(replica))
    return result


def _assignment(
    session: Session,
    replica: Any,
    spec: JobSpec,
    masters: dict[tuple[str, int], str | None],
    values: dict[tuple[str, str], str],
    checkpoint_root: str | None,
    wheelhouse: bool = False,
) -> ReplicaAssignment:
    """One replica's assignment. `replica` is a row of _ON_NODE (the job's columns too)."""
    job = replica  # the job's columns are on the same row
    workspace = replica.workspace
    started = replica.state == ReplicaState.RUNNING
    env = dict(spec.env)
    for variable, name in () if started else spec.secrets.items():
        value = values.get((replica.workspace_id, name))
        if value is None:
            log.warning(
                "replica %s of job %s: secret '%s' (for %s) is missing; started without it",
                replica.id,
                job.job,
                name,
                variable,
            )
        else:
            env[variable] = value
    env.update(
        torchrun_env(
            rank=replica.rank,
            nnodes=job.next_replicas or spec.replicas,
            nproc_per_node=max(1, spec.resources.gpus.count),
            master_addr=masters.get((job.job_id, replica.attempt)) or "127.0.0.1",
            master_port=job.master_port or 29500,
        )
    )
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in replica.gpus),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # so indices match NVML's
            "CORRAL_JOB": job.job,
            "CORRAL_WORKSPACE": workspace,
            "CORRAL_REPLICA_ID": replica.id,
            "CORRAL_RANK": str(replica.rank),
            "CORRAL_ATTEMPT": str(replica.attempt),
        }
    )
    if job.checkpoint_dir:
        env["CORRAL_CHECKPOINT_DIR"] = job.checkpoint_dir
    probe = None
    host_paths = [spec.working_dir] if spec.working_dir else []
    if job.endpoint_id is not None and job.master_port is not None:
        # A serving replica listens on its job's port, unique on the node.
        env["PORT"] = str(job.master_port)
        endpoint = session.get(Endpoint, job.endpoint_id)
        if endpoint is not None:
            serving = EndpointSpec.model_validate(endpoint.spec, context=STORED)
            probe = probe_for(serving, job.master_port)
            host_paths.extend(app_directory(serving))
    # The port the replica listens on: a serving replica's PORT, rank 0's MASTER_PORT. The
    # node starts it only while nothing else listens there.
    port = job.master_port if job.endpoint_id is not None or replica.rank == 0 else None
    return ReplicaAssignment(
        replica_id=replica.id,
        job=job.job,
        workspace=workspace,
        attempt=replica.attempt,
        rank=replica.rank,
        argv=spec.argv(),
        # The node has a running replica's assignment on disk and never starts a
        # replica twice: its files and environment need not travel again.
        env={} if started else env,
        gpus=list(replica.gpus),
        working_dir=spec.working_dir,
        host_paths=host_paths,
        files={} if started else dict(spec.files),
        probe=probe,
        port=port,
        started=started,
        uid_index=replica.uid_index,
        workspace_checkpoints=(
            workspace_checkpoints(checkpoint_root, workspace) if checkpoint_root else None
        ),
        volumes=[VolumeMount(name=n, path=p) for n, p in sorted(spec.volumes.items())],
        work_volume=f".pods/{job.pod_id}" if job.pod_id else None,
        # Like files: what a replica starts from, already on the node once it has started.
        **({} if started else code_fields(spec)),
        wheelhouse=wheelhouse and not started,
    )


def app_directory(spec: EndpointSpec) -> list[str]:
    """The directory of an `app: /path/app.py:Class` endpoint's file, which the node loads
    where the user put it (a module path names no directory)."""
    module = (spec.app or "").rpartition(":")[0]
    if not module.endswith(".py") or not posixpath.isabs(module):
        return []
    return [posixpath.dirname(posixpath.normpath(module))]


def _kept(replica: Any) -> ReplicaAssignment:
    """A started replica, named only: the node has its assignment and keeps it running."""
    return ReplicaAssignment(
        replica_id=replica.id,
        job=replica.job,
        workspace=replica.workspace,
        attempt=replica.attempt,
        rank=replica.rank,
        argv=[],
        env={},
        started=True,
    )


def _master_addresses(
    session: Session, attempts: list[tuple[str, int]]
) -> dict[tuple[str, int], str | None]:
    if not attempts:
        return {}
    rows = session.execute(_MASTERS, {"jobs": sorted({job_id for job_id, _ in attempts})})
    wanted = set(attempts)
    return {(j, a): addr for j, a, addr in rows if (j, a) in wanted}
