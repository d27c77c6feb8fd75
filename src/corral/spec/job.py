"""JobSpec: what a user asks corral to run."""

from __future__ import annotations

import shlex
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corral.core.priorities import DEFAULT_PRIORITY_CLASSES
from corral.spec.code import CodeSpec
from corral.spec.limits import bounded, check_argv
from corral.spec.names import check_name
from corral.spec.resources import Resources
from corral.spec.runnable import Runnable, check_env_and_secrets, check_workdir_or_working_dir
from corral.spec.units import parse_duration_s


def priority_value(value: Any) -> Any:
    """A priority class name becomes its number; anything else is left to the int check."""
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        try:
            return DEFAULT_PRIORITY_CLASSES[value]
        except KeyError:
            known = ", ".join(DEFAULT_PRIORITY_CLASSES)
            raise ValueError(
                f"unknown priority class {value!r}; expected a number or one of {known}"
            ) from None
    return value


class JobSpec(Runnable, CodeSpec):
    """A batch job: `replicas` copies of one command, placed together as a gang."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        default=None, description="unique in the workspace; generated if empty"
    )
    workspace: str | None = Field(default=None, description="defaults to the CLI's workspace")
    command: str | None = Field(
        default=None, description="a shell command line (run by /bin/sh -c)"
    )
    entrypoint: list[str] | None = Field(default=None, description="argv, run without a shell")
    args: list[str] = Field(default_factory=list, description="appended to entrypoint")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="environment variable -> workspace secret name (`corral secret set`); "
        "the value is given to replicas at start and never shown",
    )
    working_dir: str | None = Field(
        default=None, description="absolute directory on the node; default: the replica's own"
    )
    files: dict[str, str] = Field(
        default_factory=dict, description="relative path -> content, written before start"
    )
    resources: Resources = Field(default_factory=Resources)
    volumes: dict[str, str] = Field(
        default_factory=dict,
        description="workspace volume name -> absolute path it is mounted at in every replica",
    )
    replicas: int = Field(default=1, ge=1, le=4096)
    max_restarts: int = Field(default=0, ge=0, le=1000)
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="a number, or a class: endpoint (300) > dev (200) > train (100) > batch (0)",
    )
    preemptible: bool = Field(
        default=False,
        description="may be stopped (and queued again) for higher-priority work, and may "
        "borrow GPUs beyond its workspace's quota",
    )
    topology: Literal["node", "rack", "zone", "region", "provider", "any"] | None = Field(
        default=None,
        description="the widest domain the gang may span; default: one region",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels every replica's node must carry"
    )
    max_runtime: float | None = Field(
        default=None,
        description="seconds (or 30m, 2h): stopped after this long; lets smaller jobs "
        "backfill around it",
    )

    checkpoint_dir: str | None = Field(
        default=None,
        description="where checkpoints live across attempts and nodes: a shared filesystem "
        "path or an object-store URI (s3://…); default: the server's checkpoint root "
        "(CORRAL_CHECKPOINT_ROOT) / workspace / job. Given to replicas as "
        "CORRAL_CHECKPOINT_DIR",
    )
    progress_timeout: float | None = Field(
        default=None,
        description="seconds (or 10m) without a new step (corral.train.report) after which "
        "the attempt is treated as hung and restarted",
    )
    min_replicas: int | None = Field(
        default=None,
        ge=1,
        description="elastic: after a failure, restart on as few as this many replicas "
        "rather than wait for a replacement node",
    )

    @field_validator("progress_timeout", mode="before")
    @classmethod
    def _progress_timeout(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)

    @field_validator("checkpoint_dir")
    @classmethod
    def _checkpoint_dir(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("/") or "://" in value):
            raise ValueError("expected an absolute path (a shared mount) or a URI like s3://b/p")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return priority_value(value)

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _max_runtime(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "job name")

    @model_validator(mode="after")
    def _one_command(self, info: ValidationInfo) -> JobSpec:
        if (self.command is None) == (self.entrypoint is None):
            raise ValueError("give exactly one of `command` (a shell line) or `entrypoint` (argv)")
        if self.command is not None and not self.command.strip():
            raise ValueError("`command` must not be empty")
        if self.entrypoint is not None and not self.entrypoint:
            raise ValueError("`entrypoint` must not be empty")
        if self.command is not None and self.args:
            raise ValueError("`args` goes with `entrypoint`, not with `command`")
        check_argv(self.argv(), "the command with its arguments", bounded(info))
        check_env_and_secrets(self.env, self.secrets)
        check_workdir_or_working_dir(self.workdir, self.working_dir)
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) cannot exceed replicas ({self.replicas})"
            )
        return self

    def argv(self) -> list[str]:
        """The argv a node executes."""
        if self.entrypoint is not None:
            return [*self.entrypoint, *self.args]
        assert self.command is not None
        return ["/bin/sh", "-c", self.command]

    def display_command(self) -> str:
        return self.command if self.command is not None else shlex.join(self.argv())
