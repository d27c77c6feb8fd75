"""The pool and cost views of the API (`/v1/pools`, `/v1/usage`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from corral.spec.pool import NodePoolSpec


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class InstanceView(_View):
    """One node a pool launched, from its request to its end."""

    node: str
    state: str = Field(description="requested|launching|joined|releasing|terminated|failed")
    provider_id: str | None = None
    launched_at: float
    joined_at: float | None = None
    released_at: float | None = None
    price_per_hour: float | None = None
    reason: str | None = None


class PoolEventView(_View):
    at: float
    kind: str = Field(description="grow, release, blocked, error, ...")
    text: str


class PoolView(_View):
    spec: NodePoolSpec
    static: bool = False
    price_per_hour: float | None = Field(
        default=None, description="per node: the pool's own price, else the catalog's"
    )
    gpus_per_node: int = 0
    gpu_model: str | None = None
    nodes: int = Field(default=0, description="instances not yet ended")
    blocked_until: float | None = None
    blocked_reason: str | None = None
    created_at: float
    instances: list[InstanceView] = Field(default_factory=list, description="only in `get`")
    events: list[PoolEventView] = Field(default_factory=list, description="only in `get`")


class PoolList(_View):
    pools: list[PoolView]


class CostView(_View):
    """What a job's or a workspace's GPUs cost: GPU-hours x each node's price per GPU-hour."""

    gpu_hours: float
    usd: float | None = Field(
        default=None, description="None: some of it ran on nodes with no known price"
    )
    unpriced_gpu_hours: float = 0.0


class WorkspaceUsage(_View):
    workspace: str
    since: float
    gpu_hours: float
    usd: float | None = None
    unpriced_gpu_hours: float = 0.0
    jobs: int = 0


class UsageList(_View):
    usage: list[WorkspaceUsage]
