"""The provider interface: what corral asks of a place machines come from.

A provider turns a `LaunchRequest` into instances whose agents join the control plane by
themselves (they dial out with the join token they were given), lists the instances it
made, and terminates them. That is all: deciding *when* and *how many* is the pure
autoscaler's job (core/pools.py), and placing work is the scheduler's. See README.md for
how to add a cloud.

Methods are synchronous (cloud SDKs such as boto3 are); the control plane calls them from
a worker thread, never on its event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Shape:
    """What one instance of a type has."""

    gpu_model: str | None  # "H100"; None for a CPU-only type
    gpus: int
    cpus: float
    memory_mb: int
    gpu_memory_mb: int = 0


@dataclass(frozen=True)
class JoinInfo:
    """What an instance's agent needs to join: where the control plane is, the secret that
    lets it register (a join token, never put on a command line), its node name and labels."""

    server_url: str
    join_token: str
    node_name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchRequest:
    pool: str
    instance_type: str
    region: str
    zone: str | None
    image: str | None  # the machine image (an AMI id on aws); None: the provider's default
    spot: bool
    joins: tuple[JoinInfo, ...]  # one per instance to launch


class InstanceState(enum.StrEnum):
    PENDING = "pending"  # asked for, booting
    RUNNING = "running"  # the provider says it runs (its agent may not have joined yet)
    STOPPING = "stopping"  # shutting down / terminating
    TERMINATED = "terminated"


@dataclass(frozen=True)
class Instance:
    provider_id: str  # the provider's own id (an EC2 instance id; the host for ssh)
    node_name: str  # the name its agent registers with
    pool: str
    state: InstanceState
    instance_type: str = ""
    region: str = ""
    zone: str | None = None
    spot: bool = False
    address: str | None = None
    # The provider announced it will take the instance back (a spot interruption notice).
    interruption_at: float | None = None


class LaunchErrorKind(enum.StrEnum):
    CAPACITY = "capacity"  # the provider has none of this type there now: try elsewhere
    QUOTA = "quota"  # the account may not have more: try elsewhere, tell the operator
    AUTH = "auth"  # credentials missing or refused
    INVALID = "invalid"  # the request names something that does not exist (type, image)
    UNREACHABLE = "unreachable"  # the provider's API (or the host) did not answer


class ProviderError(Exception):
    """A provider call failed. `str()` is one line for people: what failed and the fix."""

    def __init__(self, kind: LaunchErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def retry_elsewhere(self) -> bool:
        """Whether the next-cheapest choice may succeed where this one did not."""
        return self.kind in (LaunchErrorKind.CAPACITY, LaunchErrorKind.QUOTA)


class Provider(Protocol):
    """One place machines come from. `static` providers (ssh) cannot make machines:
    their pools are the hosts an operator added, never grown or shrunk by the autoscaler."""

    name: str
    static: bool

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """Start len(request.joins) instances, each with its agent joining as its
        JoinInfo says. All or none: raises ProviderError and leaves nothing running."""
        ...

    def list(self, pool: str | None = None) -> list[Instance]:
        """The instances this provider made for corral (for `pool`, or all), as the
        provider sees them now, terminated ones possibly included."""
        ...

    def terminate(self, provider_ids: Sequence[str]) -> None:
        """Terminate these instances. Unknown or already-terminated ids are not an error."""
        ...
