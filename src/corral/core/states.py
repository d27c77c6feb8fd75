"""Every state a job, replica, node or endpoint can be in: one module, used by core, the
store's tables and the wire models alike.

They are `StrEnum`s: a member *is* its string, so a value read from the store or from JSON
compares equal to the member, and what is written is the plain string.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_JOB_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)
# Jobs not yet ended: they may hold replicas or wait for them.
LIVE_JOB_STATES: tuple[JobState, ...] = (
    JobState.PENDING,
    JobState.STARTING,
    JobState.RUNNING,
    JobState.CANCELLING,
)


class ReplicaState(StrEnum):
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"


TERMINAL_REPLICA_STATES: frozenset[ReplicaState] = frozenset(
    {ReplicaState.SUCCEEDED, ReplicaState.FAILED, ReplicaState.STOPPED, ReplicaState.LOST}
)
ACTIVE_REPLICA_STATES: frozenset[ReplicaState] = frozenset(
    {ReplicaState.ASSIGNED, ReplicaState.RUNNING}
)


class Desired(StrEnum):
    """What the control plane wants of a replica: the agent converges to it."""

    RUN = "run"
    STOP = "stop"


class NodeCondition(StrEnum):
    READY = "ready"
    CORDONED = "cordoned"  # runs what it has, takes nothing new
    UNHEALTHY = "unhealthy"  # its checks failed: takes nothing new
    LOST = "lost"  # silent past the deadline


class EndpointState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    SCALING = "scaling"
    UPDATING = "updating"
    SCALED_TO_ZERO = "scaled-to-zero"
    DELETING = "deleting"


class EndpointReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"
    DRAINING = "draining"
