"""Views of pods, SSH keys, volumes and sessions returned by the REST API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.spec.pod import PodSpec

# pending: waiting for GPUs; starting: placed, not yet running; running; stopping;
# stopped: by its owner or by idle stop (`stop_reason` says which); failed: its command or
# its node failed (`reason`); `corral pod start` runs it again.
PodState = Literal["pending", "starting", "running", "stopping", "stopped", "failed"]


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class PodEventView(_View):
    at: float
    kind: str = Field(description="session, start, stop, idle_warning, failed, ...")
    text: str
    who: str | None = None
    origin: str | None = Field(default=None, description="the client's address, for sessions")
    duration_s: float | None = None
    bytes: int | None = None


class PodView(_View):
    name: str
    workspace: str
    state: PodState
    spec: PodSpec
    node: str | None = None
    gpus: list[int] = Field(default_factory=list, description="GPU indices on its node")
    reason: str | None = Field(default=None, description="why it waits, or why it failed")
    stop_reason: str | None = Field(default=None, description="why it last stopped")
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    sessions: int = Field(default=0, description="sessions open now")
    last_activity_at: float | None = Field(
        default=None, description="when the last session closed, or the pod started"
    )
    idle_stop_at: float | None = Field(
        default=None, description="when idle stop would stop it if nothing changes"
    )
    jupyter_url: str | None = None
    events: list[PodEventView] = Field(default_factory=list, description="newest last")


class PodList(_View):
    pods: list[PodView]


class SshKeyAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    public_key: str = Field(min_length=1, max_length=16 * 1024)


class SshKeyView(_View):
    name: str
    workspace: str
    fingerprint: str = Field(description="SHA256:… as ssh-keygen -l prints it")
    public_key: str
    added_by: str
    created_at: float


class SshKeyList(_View):
    keys: list[SshKeyView]


class HostKeyView(_View):
    workspace: str
    public_key: str = Field(description="pin this: the host key of every session server")


class VolumeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)


class VolumeView(_View):
    name: str
    workspace: str
    created_at: float
    used_by: list[str] = Field(default_factory=list, description="pods and jobs mounting it")


class VolumeList(_View):
    volumes: list[VolumeView]


RelayTarget = Literal["pod", "job"]
