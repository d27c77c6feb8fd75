"""The fleet autoscaler: which node pools to grow, and which nodes to give back. Pure.

`decide(facts, now) -> FleetPlan`: no I/O, no clock reads. The server's pool controller
and `corral sim` call the same function.

(Types first; the decision is filled in by the autoscaler's module below.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core.placement import Demand
from corral.providers.base import Shape


@dataclass(frozen=True)
class PoolFacts:
    """A node pool: one shape from one provider in one place, `min_nodes..max_nodes`."""

    name: str
    provider: str
    instance_type: str
    region: str
    zone: str | None
    spot: bool
    shape: Shape
    price_per_hour: float  # per node; 0 when unknown (an unpriced pool is chosen last)
    min_nodes: int
    max_nodes: int
    labels: Mapping[str, str] = field(default_factory=dict)  # every node of the pool has them
    static: bool = False  # ssh hosts: never grown or shrunk
    idle_grace_s: float = 600.0  # a node idle this long is given back (above min_nodes)
    join_timeout_s: float = 600.0  # a launched node that has not joined by then is replaced
    # After a capacity or quota error: not tried again before this time (the next choice is).
    blocked_until: float | None = None
    blocked_reason: str | None = None


@dataclass(frozen=True)
class PoolMember:
    """One node of a pool, from its launch (no node yet) to its end."""

    pool: str
    instance: str  # the instance's key (its node name)
    launched_at: float
    joined: bool  # its node registered
    ready: bool  # ...and is ready (not cordoned, unhealthy or lost)
    # When its last replica ended (or it joined); None while work runs on it.
    idle_since: float | None
    free_gpus: int = 0  # GPUs not held by any replica now (for placing waiting gangs)
    free_cpus: float = 0.0
    free_memory_mb: int = 0
    releasing: bool = False  # already being given back


@dataclass(frozen=True)
class WaitingGang:
    """A pending job the current fleet cannot place now (the scheduler said why)."""

    job_id: str
    replicas: int
    demand: Demand
    preemptible: bool
    submitted_at: float
    topology: str | None = None  # the widest domain it may span (node|rack|zone|region|...)
    node_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetFacts:
    pools: tuple[PoolFacts, ...]
    members: tuple[PoolMember, ...]
    waiting: tuple[WaitingGang, ...]
    max_launch_per_round: int = 16  # bounds one round's spend on a burst


@dataclass(frozen=True)
class Grow:
    pool: str
    count: int
    for_jobs: tuple[str, ...]  # the waiting gangs these nodes are for
    reason: str  # for people: "2 x p5.48xlarge (spot, $39.33/h each) for job train-1"


@dataclass(frozen=True)
class Release:
    pool: str
    instance: str
    reason: str  # "idle for 612 s", "did not join within 600 s"


@dataclass(frozen=True)
class FleetPlan:
    grow: tuple[Grow, ...] = ()
    release: tuple[Release, ...] = ()
    # Waiting gangs no pool can ever hold, or none can now, and why (shown as the job's
    # pending reason): "no pool has 16 x H100 in one node; pools: p5 (8 x H100)".
    unmet: Mapping[str, str] = field(default_factory=dict)


def decide(facts: FleetFacts, now: float) -> FleetPlan:
    raise NotImplementedError  # the autoscaler's decision (owner: H3)
