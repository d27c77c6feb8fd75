"""EndpointSpec: an HTTP model server on the fleet, behind the gateway, scaled with load."""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from corral.core.priorities import DEFAULT_PRIORITY_CLASSES
from corral.spec.job import priority_value
from corral.spec.names import check_name
from corral.spec.resources import Resources
from corral.spec.runnable import Runnable, check_env_and_secrets
from corral.spec.units import parse_duration_s

_APP = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_.]*$")


def _duration(value: Any) -> Any:
    return None if value is None else parse_duration_s(value)


class Readiness(BaseModel):
    """When a replica may take traffic, and when it is dead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(default="/health", description="GET answers 2xx once the model is loaded")
    timeout: float = Field(
        default=600.0,
        description="seconds (or 10m) a replica may take to become ready (model loading) "
        "before it is replaced",
    )
    liveness_path: str | None = Field(
        default=None, description="checked while serving; default: the readiness path"
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="failed liveness probes in a row that replace it"
    )

    @field_validator("path", "liveness_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("a probe path starts with '/', e.g. /health")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return parse_duration_s(value)


class EndpointSpec(Runnable):
    """Replicas of one HTTP server, each listening on $PORT, reached at /ep/NAME/ ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        default=None, description="unique in the workspace; generated if empty"
    )
    workspace: str | None = None
    command: str | None = Field(
        default=None,
        description="a shell line that serves HTTP on $PORT, e.g. vllm serve MODEL --port $PORT",
    )
    entrypoint: list[str] | None = Field(default=None, description="argv, run without a shell")
    args: list[str] = Field(default_factory=list)
    app: str | None = Field(
        default=None,
        description="a corral.serve class, FILE.py:Class (run with `python -m corral.serve`)",
    )
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="environment variable -> workspace secret name (`corral secret set`); "
        "the value is given to replicas at start and never shown",
    )
    working_dir: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int | None = Field(
        default=None, ge=1, le=1000, description="default: min_replicas (no autoscaling), or 1"
    )
    target_in_flight: float = Field(
        default=8.0, gt=0, description="requests in flight per replica the autoscaler aims for"
    )
    scale_to_zero_after: float | None = Field(
        default=None,
        description="seconds (or 15m) without a request before the last replica is removed; "
        "needs min_replicas: 0 (default then: 5m)",
    )
    readiness: Readiness = Field(default_factory=Readiness)
    auth: Literal["public", "workspace"] = Field(
        default="workspace",
        description="public: anyone who reaches the gateway; workspace: a token of its workspace",
    )
    max_held: int = Field(
        default=100, ge=0, description="requests held while no replica is ready; beyond: 503"
    )
    hold_timeout: float = Field(default=300.0, description="how long one request is held")
    drain_timeout: float = Field(
        default=120.0, description="how long a replica being removed keeps its open requests"
    )
    affinity_header: str | None = Field(
        default=None, description="requests with the same value of this header prefer one replica"
    )
    priority: int = Field(default=DEFAULT_PRIORITY_CLASSES["endpoint"], ge=-1000, le=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "endpoint name")

    @field_validator("env", "secrets")
    @classmethod
    def _no_port(cls, value: dict[str, str]) -> dict[str, str]:
        if "PORT" in value:
            raise ValueError("PORT is set by corral: serve on $PORT")
        return value

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        if value is not None and not _APP.match(value):
            raise ValueError(f"{value!r}: expected FILE.py:Class, e.g. app.py:Embedder")
        return value

    @field_validator("scale_to_zero_after", "hold_timeout", "drain_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return priority_value(value)

    @model_validator(mode="after")
    def _check(self) -> EndpointSpec:
        given = [k for k in ("command", "entrypoint", "app") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `command`, `entrypoint` or `app`")
        if self.command is not None and not self.command.strip():
            raise ValueError("`command` must not be empty")
        check_env_and_secrets(self.env, self.secrets)
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        if self.scale_to_zero_after is not None and self.min_replicas > 0:
            raise ValueError("scale_to_zero_after needs min_replicas: 0")
        return self

    @property
    def replica_limit(self) -> int:
        return self.max_replicas or max(1, self.min_replicas)

    @property
    def idle_to_zero_s(self) -> float:
        return self.scale_to_zero_after if self.scale_to_zero_after is not None else 300.0

    def argv(self) -> list[str]:
        """What a node runs; it must serve HTTP on $PORT."""
        if self.entrypoint is not None:
            return [*self.entrypoint, *self.args]
        if self.app is not None:
            # The node's agent names its own Python (which has corral) in CORRAL_PYTHON. The
            # app answers readiness where the node probes it: the spec's path.
            line = (
                f'exec "${{CORRAL_PYTHON:-python3}}" -m corral.serve {shlex.quote(self.app)} '
                f'--host 0.0.0.0 --port "$PORT" '
                f"--readiness-path {shlex.quote(self.readiness.path)}"
            )
            return ["/bin/sh", "-c", line]
        assert self.command is not None
        return ["/bin/sh", "-c", self.command]

    def display_command(self) -> str:
        if self.command is not None:
            return self.command
        if self.app is not None:
            return f"corral serve {self.app}"
        return shlex.join(self.argv())
