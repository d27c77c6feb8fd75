"""The agent channel: one outbound WebSocket from each node to the control plane.

Flow: the agent POSTs /v1/agent/register with a join token once and keeps the node token it
gets back; then it dials /v1/agent/connect (header `Authorization: Bearer <node token>`),
sends `hello` (inventory, the TCP ports in use on the node, and every replica it knows), and
from then on heartbeats, replica reports, log chunks, and a `ports` report whenever the
node's listening ports change (and every minute). The server answers `welcome` (with the
log offsets it already has), then sends `desired` whenever the set of replicas that should
run on the node changes.
`desired` is level-triggered: it is the whole set, so a lost message is repaired by the next.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from corral.wire.health import CheckNow, HealthReport, InjectFault
from corral.wire.sessions import DropVolume, OpenSession, SessionRefused


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Gpu(_Msg):
    index: int
    uuid: str
    model: str
    memory_mb: int
    healthy: bool = True


class ContainerRuntime(_Msg):
    name: Literal["docker", "podman"]
    version: str = Field(default="", max_length=100)
    gpus: bool = Field(
        default=False, description="it can pass NVIDIA GPUs through (CDI or the toolkit)"
    )


class Inventory(_Msg):
    hostname: str
    cpus: float
    memory_mb: int
    disk_mb: int
    gpus: list[Gpu] = Field(default_factory=list)
    gpu_backend: Literal["nvml", "fake", "none"] = "none"
    labels: dict[str, str] = Field(default_factory=dict)
    agent_version: str = ""
    runtimes: list[ContainerRuntime] = Field(
        default_factory=list,
        max_length=4,
        description="container runtimes that answered on this node (docker, podman): "
        "replicas with an `image` run only where one did",
    )


class RegisterRequest(_Msg):
    join_token: str
    name: str
    inventory: Inventory
    node_token: str | None = Field(
        default=None,
        description="the node's current credential, to re-key a node of this name; without "
        "it a taken name is refused",
    )


class RegisterResponse(_Msg):
    node_id: str
    node_token: str


ReplicaPhase = Literal["running", "exited"]
REASON_MAX = 1000  # characters of a replica's unready_reason


class ReplicaReport(_Msg):
    """What the agent knows of one replica it started."""

    type: Literal["replica"] = "replica"
    replica_id: str
    phase: ReplicaPhase
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = Field(default=None, description="why it could not start, if it could not")
    log_bytes: int | None = Field(
        default=None,
        description="final size of its log; set with phase=exited, after the last chunk",
    )
    # From the agent's probes of a serving replica (ReplicaAssignment.probe); None: no probe.
    ready: bool | None = Field(
        default=None,
        description="true once its readiness probe passed; false again after failure_threshold "
        "liveness failures in a row",
    )
    unready_reason: str | None = Field(
        default=None,
        max_length=REASON_MAX,
        description="with ready=false: why, in the probe's words ('GET /health answered 404 "
        "for 40 s', 'port 8000 is held by another process, not this "
        "replica')",
    )
    port_conflict: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="with phase=exited: the port corral assigned it was held by another "
        "process on the node, so it could not run there (an infrastructure failure)",
    )
    # From the workload's progress file (corral.train.report); None until it reports.
    step: int | None = Field(default=None, description="the last training step it finished")
    checkpoint_step: int | None = Field(
        default=None, description="the step of its last complete checkpoint"
    )
    progress_at: float | None = Field(
        default=None,
        description="when it reported `step`, by the node's clock (judge staleness by when "
        "the report arrived, not by this)",
    )


# Every TCP port number at most once: a report is bounded by the port space.
PortList = Annotated[
    list[Annotated[int, Field(ge=1, le=65535)]],
    Field(max_length=65535),
]


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    inventory: Inventory
    address: str = Field(description="address peers use to reach this node (MASTER_ADDR)")
    replicas: list[ReplicaReport] = Field(default_factory=list)
    ports: PortList | None = Field(
        default=None,
        description="TCP ports something listens on at this node, sorted (None: not reported)",
    )
    lifeline: bool = Field(
        default=False,
        description="a lifeline process outlives this agent and speaks for the node while "
        "the agent is away (POST /v1/agent/lifeline): a closed connection with a silent "
        "lifeline is a dead host",
    )


class Ports(_Msg):
    """The node's listening TCP ports, whoever holds them: corral hands none of them out."""

    type: Literal["ports"] = "ports"
    ports: PortList


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    sent_at: float


class LogChunk(_Msg):
    """Bytes [offset, offset+nbytes) of a replica's log file, decoded as UTF-8."""

    type: Literal["log"] = "log"
    replica_id: str
    offset: int
    nbytes: int
    data: str


class InterruptionNotice(_Msg):
    """POST /v1/agent/interruption (node token): the provider takes this node's machine back
    (a spot interruption notice the agent read from the instance metadata service). The
    server drains the node; a repeated notice changes nothing."""

    provider: Literal["aws"] = "aws"
    action: str = Field(
        default="terminate", max_length=32, description="terminate, stop or hibernate"
    )
    at: float = Field(
        ge=0,
        le=32503680000,  # year 3000: any real notice, and a date every clock can show
        allow_inf_nan=False,
        description="when the machine goes, unix seconds, as the provider says",
    )


class InterruptionAck(_Msg):
    outcome: str = Field(description="what the server did, in words")


AgentMessage = Annotated[
    Hello | Heartbeat | ReplicaReport | LogChunk | Ports | HealthReport | SessionRefused,
    Field(discriminator="type"),
]
AGENT_MESSAGE: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)


class Probe(_Msg):
    """HTTP health checks the agent runs against a serving replica on its own node."""

    port: int = Field(ge=1, le=65535, description="the replica listens on 127.0.0.1:port")
    readiness_path: str = Field(default="/health", description="2xx: ready for traffic")
    liveness_path: str | None = Field(
        default=None, description="checked once ready; default: the readiness path"
    )
    period_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0, description="one probe's HTTP timeout")
    failure_threshold: int = Field(
        default=3, ge=1, description="consecutive failed liveness probes that make it unready"
    )


class VolumeMount(_Msg):
    """A workspace volume: `<the node's volume root>/<workspace>/<name>`, created for the
    workspace's user on first use, seen by the replica at `path`."""

    name: str = Field(max_length=63)
    path: str = Field(max_length=1024)


class ReplicaAssignment(_Msg):
    replica_id: str
    job: str
    workspace: str
    attempt: int
    rank: int
    argv: list[str]
    env: dict[str, str] = Field(
        description="complete environment additions: torchrun variables, CUDA_VISIBLE_DEVICES"
    )
    gpus: list[int] = Field(default_factory=list)
    working_dir: str | None = None
    host_paths: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="directories of the node the spec names (its working_dir, its app file's "
        "directory): a confined replica sees each one its workspace's user may reach on the "
        "host, /tmp included (which it otherwise has a private one of)",
    )
    files: dict[str, str] = Field(default_factory=dict)
    probe: Probe | None = Field(default=None, description="for serving replicas (endpoints)")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="the port corral gave it to listen on (PORT, or MASTER_PORT on rank 0): "
        "the node starts it only if nothing listens there yet",
    )
    started: bool = Field(
        default=False,
        description="the node reported it running: files and env are left out (the node "
        "has them), and a node with no record of it must not start it",
    )
    uid_index: int | None = Field(
        default=None,
        ge=1,
        description="the workspace's number: a confining node runs the replica as uid "
        "base + uid_index, the same on every node",
    )
    workspace_checkpoints: str | None = Field(
        default=None,
        description="the workspace's checkpoint directory (a path every node sees): created "
        "for, and owned by, the workspace's user on a confining node",
    )
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=16)
    work_volume: str | None = Field(
        default=None,
        max_length=200,
        description="a pod's: the working directory is this directory inside the workspace's "
        "volume root (`.pods/<pod id>`), so its files outlive the replica and, on a shared "
        "volume root, follow the pod to another node",
    )
    workdir: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the digest of the workspace's uploaded working directory (a manifest in "
        "the artifact store): fetched by the agent (GET /v1/agent/artifacts/...) and "
        "copied into the working directory before the replica starts",
    )
    environment: dict[str, str | list[str]] | None = Field(
        default=None,
        description="spec.code.EnvironmentSpec as JSON: built (or found in the cache) with "
        "uv before the command runs, as the replica's user",
    )
    setup: str | None = Field(
        default=None, description="shell commands run once per node and environment"
    )
    image: str | None = Field(default=None, description="a container image to run in")
    wheelhouse: bool = Field(
        default=False,
        description="the control plane serves a package index (/v1/wheels/simple/): "
        "environments are built from it, for nodes that cannot reach PyPI",
    )


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    node_id: str
    heartbeat_interval_s: float
    log_offsets: dict[str, int] = Field(
        default_factory=dict, description="replica_id -> bytes the server already has"
    )


class Desired(_Msg):
    """Every replica that should be running on this node now; stop any other.

    A large set travels in `parts` messages of one `generation`, each well under the
    channel's message limit; the agent applies the set once it has every part.
    """

    type: Literal["desired"] = "desired"
    replicas: list[ReplicaAssignment]
    generation: int = 0
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1)


ServerMessage = Annotated[
    Welcome | Desired | InjectFault | CheckNow | OpenSession | DropVolume,
    Field(discriminator="type"),
]
SERVER_MESSAGE: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)
