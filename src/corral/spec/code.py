"""Where a workload's code and environment come from: a synced working directory, a Python
environment built on the node with uv, setup commands, a container image.

`workdir` is a local directory to the CLI, which packs and uploads it (client/workdir.py)
and replaces it with the digest of the uploaded tree (`sha256:<64 hex>`); the server only
ever stores and accepts the digest. Paths in `environment` are relative to the working
directory: the files travel with it, and the node hashes what it finds there.
"""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_REQUIREMENTS = 1000
MAX_REQUIREMENT_BYTES = 1024
MAX_SETUP_BYTES = 64 * 1024
MAX_IMAGE_BYTES = 512
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PYTHON = re.compile(r"^3(\.\d{1,2}){0,2}$")
# A container image reference: [registry[:port]/]path[:tag][@sha256:…], as docker parses it.
_IMAGE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def check_relative(value: str, field: str) -> str:
    """A path inside the working directory: relative, no `..`, no NUL."""
    parts = value.split("/")
    if not value or value.startswith("/") or "\0" in value or ".." in parts or len(value) > 1024:
        raise ValueError(
            f"{field} must be a relative path inside the working directory, not {value!r}"
        )
    return value


class EnvironmentSpec(BaseModel):
    """A Python environment the node builds with uv, cached by the hash of what it is built
    from: the second replica, and the next job with the same inputs, start at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str | None = Field(
        default=None, description='a Python version for uv ("3.11"); default: the node\'s'
    )
    requirements: str | list[str] | None = Field(
        default=None,
        description="a requirements file in the working directory, or the requirement lines "
        "themselves",
    )
    uv_lock: str | None = Field(
        default=None,
        description="a uv.lock in the working directory (its pyproject.toml beside it): "
        "installed exactly (uv sync --frozen)",
    )

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        if value is not None and not _PYTHON.match(value):
            raise ValueError(f'expected a Python version like "3.11", not {value!r}')
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str):
            return check_relative(value, "environment.requirements")
        if isinstance(value, list):
            if len(value) > MAX_REQUIREMENTS:
                raise ValueError(f"{len(value)} requirements; at most {MAX_REQUIREMENTS}")
            for line in value:
                if not line.strip() or "\n" in line or len(line) > MAX_REQUIREMENT_BYTES:
                    raise ValueError(
                        f"each requirement is one non-empty line of at most "
                        f"{MAX_REQUIREMENT_BYTES} characters, not {line[:80]!r}"
                    )
        return value

    @field_validator("uv_lock")
    @classmethod
    def _lock(cls, value: str | None) -> str | None:
        return None if value is None else check_relative(value, "environment.uv_lock")

    def is_empty(self) -> bool:
        return self.python is None and self.requirements is None and self.uv_lock is None


def check_workdir(value: str | None) -> str | None:
    if value is not None and (not value or "\0" in value or len(value) > 4096):
        raise ValueError("workdir must be a directory (or the digest of an uploaded one)")
    return value


def check_setup(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError("`setup` must not be empty; leave it out for none")
    if len(value.encode()) > MAX_SETUP_BYTES:
        raise ValueError(f"`setup` is longer than {MAX_SETUP_BYTES // 1024} KiB")
    return value


def check_image(value: str | None) -> str | None:
    if value is not None and (len(value) > MAX_IMAGE_BYTES or not _IMAGE.match(value)):
        raise ValueError(
            f"expected a container image reference like ghcr.io/org/train:1.2, not {value!r}"
        )
    return value


class CodeSpec(BaseModel):
    """The fields a job and a pod share about their code: declared once, inherited."""

    workdir: str | None = Field(
        default=None,
        description="a local directory the CLI packs (honouring .gitignore and "
        ".corralignore) and uploads once, content-addressed; every replica starts in a copy "
        "of it. Stored as the digest of the uploaded tree (sha256:…)",
    )
    environment: EnvironmentSpec | None = Field(
        default=None,
        description="a Python environment built on the node with uv and cached: python, "
        "requirements (a file in the workdir, or lines), uv_lock",
    )
    setup: str | None = Field(
        default=None,
        description="shell commands run once per node and environment, before the command "
        "(cached; their output is in the log)",
    )
    image: str | None = Field(
        default=None,
        description="a container image to run in, on nodes with a container runtime "
        "(docker or podman)",
    )

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return check_workdir(value)

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: str | None) -> str | None:
        return check_setup(value)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return check_image(value)

    @model_validator(mode="after")
    def _image_is_the_environment(self) -> Self:
        both = [f for f in ("environment", "setup") if getattr(self, f) is not None]
        if self.image is not None and both:
            raise ValueError(
                f"`{both[0]}` with `image`: the image is the replica's environment, so "
                f"{' and '.join(both)} would not run; build it into the image, or leave "
                "`image` out"
            )
        return self


def code_fields(spec: CodeSpec) -> dict[str, Any]:
    """The code fields of a job or pod spec, for the node (ReplicaAssignment)."""
    env = spec.environment
    return {
        "workdir": spec.workdir.removeprefix("sha256:") if spec.workdir else None,
        "environment": None if env is None else env.model_dump(exclude_none=True),
        "setup": spec.setup,
        "image": spec.image,
    }
