"""Tables. Rows that change state carry a `version` checked on every update."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    literal,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corral.core.states import Desired, JobState, NodeCondition, ReplicaState
from corral.server.store.types import State


class Base(DeclarativeBase):
    pass


def _next_uid_index(context: DefaultExecutionContext) -> int:
    # One more than any workspace ever had: workspaces are never deleted, so no index is
    # ever handed out twice. (A future delete must keep a tombstone row, or the next
    # workspace would inherit the deleted one's files on the nodes.) Two writers racing
    # get the same value and the unique index refuses the second: it retries (services).
    found = context.connection.execute(
        text("SELECT COALESCE(MAX(uid_index), 0) + 1 FROM workspaces")
    ).scalar()
    return int(found or 1)


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (Index("uq_workspaces_uid_index", "uid_index", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    # Gives the workspace its own Unix uid on every node (base + uid_index); 1, 2, 3, ...
    # in creation order, never reused. Set on insert when not given.
    uid_index: Mapped[int] = mapped_column(Integer, default=_next_uid_index)


class Token(Base):
    """A user API token. workspace_id NULL with role admin is a cluster admin.

    Names are unique per workspace, and among the cluster-wide tokens (see the index below
    the class). Revoking a token deletes its row.
    """

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[float] = mapped_column(Float)


# NULL never equals NULL in a unique index, so the cluster-wide tokens (workspace_id NULL)
# are folded into one scope ('') for their names to be unique too.
Index(
    "uq_tokens_scope_name",
    func.coalesce(Token.workspace_id, literal("", String)),
    Token.name,
    unique=True,
)


class JoinToken(Base):
    """Lets an agent register a node; never valid for the user API.

    A revoked one keeps its row (revoked_at), so that an agent refused is told why.
    """

    __tablename__ = "join_tokens"
    __table_args__ = (Index("uq_join_tokens_name", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Labels the server binds to what registers with this token (pool, provider, ssh-*...):
    # set at registration, and an agent's hello cannot change them. None: none bound.
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


# A deleted node that replicas ran on keeps its row (their history), renamed to this
# prefix + its id: its name is free again and no listing shows it.
RETIRED_PREFIX = "deleted:"


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    condition: Mapped[NodeCondition] = mapped_column(State(NodeCondition, 16))
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hostname: Mapped[str] = mapped_column(String(255))
    cpus: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    gpu_backend: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    agent_version: Mapped[str] = mapped_column(String(64))
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # TCP ports something listens on there, as its agent last reported (None: not reported):
    # the scheduler hands none of them out.
    ports: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    # Container runtimes its agent reported (wire.agent.ContainerRuntime dicts; None: an
    # agent from before they were reported): jobs with an `image` are placed only there.
    runtimes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Why an operator (or recovery) cordoned it; None when not cordoned. A node taken out by
    # its health checks is `unhealthy` and comes back to this (cordoned) or to ready.
    cordon_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # core.health's judgement of its last report (Assessment.to_json), and the report.
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Loaded only where read (the node page, idle pods): every other load of a node, the
    # fleet's 1,000 at once included, would parse each node's whole last report.
    health_signals: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, nullable=True, deferred=True
    )
    health_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    boot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Xids before this are history an operator closed (`corral node set-healthy`).
    repaired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # An operator's set-healthy waiting for the next checks to pass.
    repair_claim_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class HealthEvent(Base):
    """Something about a node's health: an Xid, a signal that changed, what corral did about
    it (cordoned, attempts ended, replicas replaced), an operator's action. Append-only."""

    __tablename__ = "health_events"
    __table_args__ = (Index("ix_health_events_node_at", "node_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float)  # the server's clock
    kind: Mapped[str] = mapped_column(String(16))  # xid, sxid, health, action, operator
    gpu_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_uuid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    boot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    node_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # the node's clock
    health: Mapped[str | None] = mapped_column(String(16), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    workloads: Mapped[list[str]] = mapped_column(JSON, default=list)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name", name="uq_jobs_workspace_name"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_recheck_at", "recheck_at"),
        # Listing newest first, per workspace and across them (services/jobs.list_page).
        Index("ix_jobs_workspace_submitted", "workspace_id", "submitted_at", "id"),
        Index("ix_jobs_submitted", "submitted_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[JobState] = mapped_column(State(JobState, 16))
    priority: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    # Times it was stopped for higher-priority work or to give back borrowed quota.
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    # Its current attempt runs on GPUs beyond its workspace's guarantee (reclaimable).
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Where its checkpoints live, across attempts and nodes (CORRAL_CHECKPOINT_DIR).
    checkpoint_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    # core.recovery's memory across attempts (core.recovery.RecoveryMemory, read and written
    # by services/recovery.py).
    recovery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Decide about it again at this time even if nothing is reported (a hang, a held failure).
    recheck_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The next attempt's size when an elastic job shrank; None: spec.replicas.
    next_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A serving replica of an endpoint (one job per replica), and the spec revision it runs.
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=True, index=True
    )
    endpoint_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A dev pod's run (one job per start of the pod).
    pod_id: Mapped[str | None] = mapped_column(
        ForeignKey("pods.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # When the gateway was told to stop sending it requests (it finishes what it has).
    draining_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    master_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Endpoint(Base):
    """An inference endpoint: its spec, revision, and the autoscaler's memory."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_endpoints_workspace_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer)
    desired_replicas: Mapped[int] = mapped_column(Integer)
    # core.autoscale's state between decisions, and the last decision's reason.
    autoscale: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Quota(Base):
    """A workspace's guaranteed GPUs of one model ("*": any model)."""

    __tablename__ = "quotas"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_model: Mapped[str] = mapped_column(String(64), primary_key=True)
    gpus: Mapped[int] = mapped_column(Integer)


class Replica(Base):
    """One instance of a job's attempt on one node."""

    __tablename__ = "replicas"
    __table_args__ = (
        Index("ix_replicas_node_state", "node_id", "state"),
        Index("ix_replicas_job_attempt", "job_id", "attempt"),
        Index("ix_replicas_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    gpus: Mapped[list[int]] = mapped_column(JSON)
    cpus: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    state: Mapped[ReplicaState] = mapped_column(State(ReplicaState, 16))
    desired: Mapped[Desired] = mapped_column(State(Desired, 8))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_bytes: Mapped[int] = mapped_column(Integer, default=0)
    log_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Training progress, from the workload's corral.train.report.
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # server clock
    # Serving replicas: the agent's probes say whether it takes traffic (None: not probed).
    ready: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # An infrastructure cause the agent found for its failure (core.recovery.Cause value,
    # e.g. "port_in_use"): not charged to the script.
    infra_cause: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Attempt(Base):
    """One run of a job's gang: when, how far it got, and why it ended (goodput)."""

    __tablename__ = "attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    replicas: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_cause: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    start_step: Mapped[int] = mapped_column(Integer, default=0)
    first_step_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LogChunk(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_replica_offset", "replica_id", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    replica_id: Mapped[str] = mapped_column(ForeignKey("replicas.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(Integer)
    nbytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)


class Secret(Base):
    """A workspace secret: its value encrypted (server/secretbox.py), never in clear.

    The key is not in the database: a copy of the database alone reveals no value.
    """

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_secrets_workspace_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Lease(Base):
    """Who runs the controllers on this store: one server at a time (server/lease.py).

    A holder proves it is alive by moving `beat`; `holder` is None once released.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    beat: Mapped[int] = mapped_column(Integer, default=0)
    acquired_at: Mapped[float] = mapped_column(Float)
    renewed_at: Mapped[float] = mapped_column(Float)


class Pod(Base):
    """A dev pod: its spec, whether it should run, and (while it runs) its job."""

    __tablename__ = "pods"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_pods_workspace_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    desired: Mapped[str] = mapped_column(String(16))  # running | stopped | deleted
    # The current run's job; the pod's jobs are also found by jobs.pod_id.
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The idle clock: when the pod started, or a session that counted last closed.
    last_activity_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_warned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    jupyter_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class PodEvent(Base):
    """What happened to a pod: sessions (who, from where, how long), starts and stops."""

    __tablename__ = "pod_events"
    __table_args__ = (Index("ix_pod_events_pod_at", "pod_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pod_id: Mapped[str] = mapped_column(ForeignKey("pods.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))  # session, start, stop, idle_warning, ...
    text: Mapped[str] = mapped_column(Text)
    who: Mapped[str | None] = mapped_column(String(100), nullable=True)
    origin: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # A session's: open while ended_at is NULL.
    session_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SshKey(Base):
    """A public key that may open sessions into the workspace's pods and replicas."""

    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_ssh_keys_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(100))
    added_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)


class SshHostKey(Base):
    """The workspace's SSH host key: every session server presents it; clients pin it."""

    __tablename__ = "ssh_host_keys"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    private_key: Mapped[str] = mapped_column(Text)  # encrypted with the secret box
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Volume(Base):
    """A named workspace volume: a directory under each node's volume root."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_volumes_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[float] = mapped_column(Float)


class Pool(Base):
    """A node pool (spec.pool.NodePoolSpec as JSON), and when the autoscaler may try it
    again after the provider refused (capacity, quota)."""

    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    blocked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    blocked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Asked to go: its nodes are drained and released, then the row is removed.
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class PoolInstance(Base):
    """One node a pool launched, keyed by the node name its agent registers with.

    requested -> launching -> joined -> releasing -> terminated, or failed (the provider
    refused, or it never joined). Ended rows stay for `pool get` and for cost history.
    """

    __tablename__ = "pool_instances"
    __table_args__ = (
        Index("ix_pool_instances_pool_state", "pool", "state"),
        Index("uq_pool_instances_node", "node_name", unique=True),
        Index("ix_pool_instances_node_id", "node_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pool: Mapped[str] = mapped_column(String(63))
    node_name: Mapped[str] = mapped_column(String(253))
    # The node row it joined as: a deleted node is renamed, its id stays (cost history).
    node_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    join_token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    launched_at: Mapped[float] = mapped_column(Float)
    joined_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    released_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    price_per_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class PoolEvent(Base):
    """Why a pool grew, shrank or was blocked (`corral pool get`); the newest few kept."""

    __tablename__ = "pool_events"
    __table_args__ = (Index("ix_pool_events_pool_at", "pool", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool: Mapped[str] = mapped_column(String(63))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)


class ClusterSetting(Base):
    """One value that belongs to this control plane as a whole, the same for every server
    on the store (services/cluster.py: its id, which scopes the cloud instances it owns)."""

    __tablename__ = "cluster_settings"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
