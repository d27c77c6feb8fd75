"""PodSpec: a dev box — GPUs with your environment, reached over SSH, stopped when idle."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from corral.spec.code import CodeSpec
from corral.spec.job import priority_value
from corral.spec.names import check_name
from corral.spec.resources import Resources
from corral.spec.runnable import Runnable, check_env_and_secrets
from corral.spec.units import parse_duration_s

DEFAULT_IDLE_STOP_S = 2 * 3600.0
DEFAULT_IDLE_GPU_UTIL = 10
JUPYTER_PORT = 8888


def _idle_stop(value: Any) -> Any:
    if value is None or value in ("never", "off", 0, "0"):
        return None
    return parse_duration_s(value)


class PodSpec(Runnable, CodeSpec):
    """One replica that runs until stopped; its working directory outlives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, description="unique in the workspace")
    workspace: str | None = Field(default=None, description="defaults to the CLI's workspace")
    resources: Resources = Field(default_factory=Resources)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict, description="environment variable -> workspace secret name"
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="relative path -> content, written into the working directory at start",
    )
    volumes: dict[str, str] = Field(
        default_factory=dict,
        description="workspace volume name -> absolute path it is mounted at in the pod",
    )
    command: str | None = Field(
        default=None,
        description="a shell line run for the pod's life (a server, a notebook); default: "
        "nothing, the pod waits for sessions",
    )
    idle_stop: float | None = Field(
        default=DEFAULT_IDLE_STOP_S,
        description="seconds (or 30m, 2h; `never`) with no open session and GPUs under "
        "idle_gpu_util after which the pod stops and frees its GPUs",
    )
    idle_gpu_util: int = Field(
        default=DEFAULT_IDLE_GPU_UTIL,
        ge=0,
        le=100,
        description="percent: a pod whose GPUs are busier than this is not idle",
    )
    jupyter: bool = Field(
        default=False,
        description=f"start JupyterLab on port {JUPYTER_PORT} when it is installed in the pod",
    )
    priority: int = Field(default=200, ge=-1000, le=1000, description="default: dev (200)")
    node_selector: dict[str, str] = Field(default_factory=dict)

    @field_validator("idle_stop", mode="before")
    @classmethod
    def _idle(cls, value: Any) -> Any:
        return _idle_stop(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return priority_value(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "pod name")

    @model_validator(mode="after")
    def _both(self) -> PodSpec:
        check_env_and_secrets(self.env, self.secrets)
        if self.command is not None and not self.command.strip():
            raise ValueError("`command` must not be empty; leave it out for none")
        return self
