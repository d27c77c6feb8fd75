"""Views returned by the REST API (and read by the SDK and CLI)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.core.states import (
    TERMINAL_JOB_STATES,
    TERMINAL_REPLICA_STATES,
    EndpointReplicaState,
    EndpointState,
    JobState,
    NodeCondition,
    ReplicaState,
)
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec
from corral.wire.agent import ContainerRuntime
from corral.wire.pools import CostView

__all__ = [
    "TERMINAL_JOB_STATES",
    "TERMINAL_REPLICA_STATES",
    "EndpointReplicaState",
    "EndpointState",
    "JobState",
    "NodeCondition",
    "ReplicaState",
]

Role = Literal["admin", "member", "viewer", "metrics"]  # metrics: reads /metrics only


class _View(BaseModel):
    # Built at first use, not at import: a CLI command parses one or two of these views,
    # and building every schema up front cost each command ~40 ms.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Paged(_View):
    """What every list answer carries besides its items (server/services/pages.py)."""

    next_cursor: str | None = Field(
        default=None,
        description="pass as ?cursor= for the next page; null: this is the last page",
    )


class ErrorDetail(_View):
    code: str = Field(description="machine-readable kind, e.g. not_found, invalid_spec, conflict")
    message: str
    fields: list[dict[str, str]] = Field(default_factory=list, description="[{path, message}]")


class ErrorBody(_View):
    error: ErrorDetail


class ReplicaView(_View):
    id: str
    rank: int
    attempt: int
    node: str | None
    gpus: list[int]
    state: ReplicaState
    exit_code: int | None = None
    pid: int | None = None
    assigned_at: float | None = Field(default=None, description="when the scheduler placed it")
    step: int | None = Field(default=None, description="its last reported training step")
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None


class AttemptView(_View):
    attempt: int
    replicas: int
    started_at: float
    ended_at: float | None = None
    end_cause: str | None = Field(
        default=None,
        description="node_lost, gpu_xid, hang, user_error, preempted …; null: succeeded, "
        "cancelled or still running",
    )
    reason: str | None = None
    start_step: int = Field(default=0, description="the checkpoint step it resumed from")
    step: int | None = Field(default=None, description="the last step it reached")
    checkpoint_step: int | None = None


class GoodputView(_View):
    ettr: float = Field(description="effective training time ratio: productive ÷ wall time")
    wall_s: float = Field(description="since the first attempt started")
    productive_s: float
    startup_s: float
    lost_by_cause: dict[str, float] = Field(
        default_factory=dict, description="seconds lost to each cause of interruption"
    )


class JobView(_View):
    name: str
    workspace: str
    state: JobState
    spec: JobSpec
    attempt: int = Field(description="1-based number of the current or last attempt; 0 before")
    restarts: int
    preemptions: int = Field(default=0, description="times stopped for higher-priority work")
    borrowed: bool = Field(
        default=False,
        description="runs on GPUs guaranteed to other workspaces, beyond its own quota and the "
        "unguaranteed pool (reclaimable)",
    )
    exit_code: int | None = None
    reason: str | None = Field(default=None, description="why it ended, or why it is pending")
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    replicas: list[ReplicaView] = Field(default_factory=list, description="the current attempt's")
    step: int | None = Field(default=None, description="the last training step reported")
    checkpoint_step: int | None = Field(default=None, description="the newest checkpoint's step")
    attempts: list[AttemptView] = Field(default_factory=list)
    goodput: GoodputView | None = None
    endpoint: str | None = Field(default=None, description="the endpoint it serves, if any")
    cost: CostView | None = Field(
        default=None, description="GPU-hours and USD of all its attempts (only in `get`)"
    )
    log_tail: list[str] = Field(default_factory=list, description="last lines, once it has failed")
    warnings: list[str] = Field(
        default_factory=list,
        description="only in the answer to a submission: what the submitter should know at "
        "once, e.g. that no node of the fleet has ever had the GPU model it asks for",
    )


class JobList(Paged):
    """Newest first."""

    jobs: list[JobView]


# What `?kind=` selects: `job` a job someone submitted, `endpoint-replica` a job that runs
# one replica of an endpoint (jobs.endpoint_id is set), `all` both.
JobKind = Literal["job", "endpoint-replica", "all"]


class ReplicaLog(_View):
    """A replica's page in a JobLogs answer."""

    replica: int
    data: str
    offset: int
    next_offset: int
    complete: bool


class JobLogs(_View):
    """Every replica's log of one attempt read on from the offsets given, with the job's
    state: one request per poll follows a whole gang and says why it waits."""

    state: JobState
    reason: str | None = None
    job_attempt: int = Field(description="the job's current attempt (0: never started)")
    attempt: int = Field(description="the attempt these pages are of")
    replicas: int = Field(description="replicas of that attempt (the spec's while pending)")
    pages: list[ReplicaLog] = Field(default_factory=list, description="by rank")


class LogPage(_View):
    replica: int
    attempt: int
    data: str
    offset: int = Field(description="byte offset this page starts at")
    next_offset: int = Field(description="pass as ?offset= to read on")
    complete: bool = Field(description="true once the replica has ended and all its log is here")


class GpuView(_View):
    index: int
    model: str
    memory_mb: int
    uuid: str
    healthy: bool = Field(description="the scheduler may place work on it")
    allocated: bool
    health: str = "unknown"  # healthy, degraded, unhealthy, unknown (no report yet)
    repair: str = "none"
    sentence: str | None = None  # the worst finding, in words


class NodeView(_View):
    id: str
    name: str
    address: str | None
    condition: NodeCondition
    gpu_backend: str
    gpus: list[GpuView]
    cpus: float
    memory_mb: int
    disk_mb: int
    labels: dict[str, str]
    agent_version: str
    runtimes: list[ContainerRuntime] = Field(
        default_factory=list, description="container runtimes its agent reported (docker, podman)"
    )
    connected: bool
    last_heartbeat_at: float | None
    heartbeat_age_s: float | None
    registered_at: float
    health: str = "unknown"
    health_summary: str | None = None
    cordon_reason: str | None = None


class NodeList(Paged):
    nodes: list[NodeView]


class WorkspaceCreate(_View):
    model_config = ConfigDict(defer_build=False)  # a request body: FastAPI builds it

    name: str


class WorkspaceView(_View):
    name: str
    created_at: float


class WorkspaceList(Paged):
    workspaces: list[WorkspaceView]


class TokenCreate(_View):
    model_config = ConfigDict(defer_build=False)  # a request body: FastAPI builds it

    name: str | None = None
    role: Role = "member"
    workspace: str | None = Field(
        default=None, description="workspace the token acts in; omitted: the caller's"
    )


class TokenView(_View):
    name: str
    role: Role
    workspace: str | None
    created_at: float
    token: str | None = Field(default=None, description="the secret; shown once, at creation")


class TokenInfo(_View):
    """A token as listed: nothing in it is derived from the secret."""

    name: str
    role: Role
    workspace: str | None = Field(description="None for a cluster-wide token")
    created_at: float


class TokenList(Paged):
    tokens: list[TokenInfo]


# One secret's value, at most: a token, a password, a key file; not a data set.
MAX_SECRET_BYTES = 64 * 1024


class SecretSet(BaseModel):
    """The value of a workspace secret; it is stored encrypted and never returned."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(description=f"at most {MAX_SECRET_BYTES // 1024} KiB (UTF-8)")

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_SECRET_BYTES:
            raise ValueError(f"{size} bytes; a secret is at most {MAX_SECRET_BYTES // 1024} KiB")
        if "\0" in value:
            raise ValueError("a secret is given as an environment variable: no NUL character")
        return value


class SecretInfo(_View):
    """A secret as listed: its name and times, never its value."""

    name: str
    created_at: float
    updated_at: float


class SecretList(Paged):
    secrets: list[SecretInfo]


JoinTokenState = Literal["active", "expired", "used_up", "revoked"]
# A join token made without a ttl lives a day, as kubeadm's bootstrap tokens: long enough
# to bring up a fleet, short enough that one left in a script or a log dies on its own.
DEFAULT_JOIN_TTL_S = 24 * 3600.0
# Labels only the server sets on a node: from the join token it registered with (a pool's
# controller, `corral node add`), never from the agent's own --label or inventory. Prices,
# pool membership and where `corral node remove` SSHes to rest on them. The topology keys
# (provider, region, zone, rack) are not among them: they only steer placement, and a
# hand-joined node states them itself (`corral agent --label zone=a`).
BOUND_LABELS = frozenset(
    {
        "pool",
        "instance-type",
        "spot",
        "price-per-hour",
        "ssh-host",
        "ssh-port",
        "ssh-user",
        "ssh-install-dir",
    }
)
_BOUND_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


class JoinTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="default: join-<random hex>")
    ttl_s: float | None = Field(
        default=DEFAULT_JOIN_TTL_S,
        gt=0,
        le=366 * 24 * 3600.0,
        description="seconds until it expires (default a day); null: never",
    )
    max_uses: int | None = Field(
        default=None, ge=1, description="registrations it allows; null (default): unlimited"
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description="labels the server gives each node registering with it; of these keys "
        f"({', '.join(sorted(BOUND_LABELS))}) only such labels count: a node's own are ignored",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > 64:
            raise ValueError(f"at most 64 labels (got {len(value)})")
        for key, text in value.items():
            if not _BOUND_KEY.match(key):
                raise ValueError(f"label key {key!r}: use letters, digits, '-', '_', '.', '/'")
            if len(text) > 253:
                raise ValueError(f"label {key}: the value is longer than 253 characters")
        return value


class JoinTokenView(_View):
    token: str | None = Field(default=None, description="the secret; shown once, at creation")
    created_at: float
    name: str = ""
    expires_at: float | None = Field(default=None, description="None: never")
    max_uses: int | None = Field(default=None, description="None: unlimited")
    uses: int = Field(default=0, description="registrations made with it")
    revoked_at: float | None = None
    state: JoinTokenState = "active"


class JoinTokenList(Paged):
    join_tokens: list[JoinTokenView]


class WhoAmI(_View):
    token: str
    role: Role
    workspace: str | None = Field(description="None for a cluster admin (all workspaces)")


class QuotaSet(BaseModel):
    """Guaranteed GPUs per model ("*": any model); replaces the workspace's guarantees."""

    model_config = ConfigDict(extra="forbid")

    gpus: dict[str, int] = Field(
        description='GPU model -> guaranteed GPUs, e.g. {"H100": 16}; "*" counts any model'
    )

    @field_validator("gpus")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        for model, count in value.items():
            if not model or len(model) > 64:
                raise ValueError(f"{model!r} is not a GPU model name")
            if count < 0:
                raise ValueError(f"{model}: a guarantee cannot be negative (got {count})")
        return value


class QuotaView(_View):
    workspace: str
    guaranteed: dict[str, int] = Field(description="GPU model -> guaranteed GPUs")
    used: dict[str, int] = Field(description="GPU model -> GPUs its running replicas hold")


class QuotaList(Paged):
    quotas: list[QuotaView]


class EndpointReplicaView(_View):
    job: str = Field(description="the job running this replica (`corral job logs JOB`)")
    revision: int
    state: EndpointReplicaState
    node: str | None = None
    url: str | None = Field(default=None, description="the replica itself, behind the gateway")
    started_at: float | None = None
    ready_at: float | None = None
    reason: str | None = Field(
        default=None,
        description="why it does not serve yet: the scheduler's pending reason, or its "
        "readiness probe's words",
    )


class EndpointView(_View):
    name: str
    workspace: str
    state: EndpointState
    path: str = Field(description="on the gateway: http://GATEWAY/ep/NAME/")
    url: str | None = Field(default=None, description="the full URL, when a gateway is known")
    revision: int
    desired_replicas: int
    ready_replicas: int
    min_replicas: int
    max_replicas: int
    reason: str | None = Field(default=None, description="what its replicas are doing now")
    autoscaler: str | None = Field(
        default=None, description="the autoscaler's last reckoning: load, target, holds"
    )
    spec: EndpointSpec
    replicas: list[EndpointReplicaView] = Field(default_factory=list)
    created_at: float
    updated_at: float
    warnings: list[str] = Field(
        default_factory=list,
        description="only in the answer to a deploy or update: e.g. that no node of the fleet "
        "has ever had the GPU model it asks for",
    )


class EndpointList(Paged):
    endpoints: list[EndpointView]


class StatusNodes(_View):
    total: int = 0
    ready: int = 0
    cordoned: int = 0
    unhealthy: int = 0
    lost: int = 0


class StatusGpus(_View):
    """One GPU model's count on the fleet."""

    model: str
    total: int
    used: int = Field(description="held by active replicas, of any workspace")
    free: int = Field(description="healthy, unheld, on a ready node")


class StatusReason(_View):
    reason: str
    jobs: int


class StatusWork(_View):
    """Work of the workspaces the caller may see."""

    running: int = Field(default=0, description="jobs starting or running")
    pending: int = 0
    pending_reasons: list[StatusReason] = Field(
        default_factory=list, description="the commonest reasons pending jobs wait, top 5"
    )
    endpoints: int = 0
    endpoints_ready: int = Field(default=0, description="with at least one ready replica")
    pods: int = Field(default=0, description="dev pods that should run (not stopped)")
    pods_running: int = 0


class StatusWorkspace(_View):
    name: str
    running: int
    pending: int
    gpus_used: int


class StatusView(_View):
    """`corral status`: the cluster on one screen."""

    scope: str = Field(description="the workspace the work counts are of, or '*' for all")
    nodes: StatusNodes
    gpus: list[StatusGpus] = Field(default_factory=list, description="by model")
    work: StatusWork
    workspaces: list[StatusWorkspace] = Field(
        default_factory=list, description="per workspace (cluster admins only)"
    )
