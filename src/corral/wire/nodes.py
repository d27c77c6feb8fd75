"""Views of one node for `corral node get`, and the operator's requests about a node."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.wire.api import NodeView
from corral.wire.health import FaultKind


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class HealthEventView(_View):
    at: float
    kind: str  # xid, sxid, health, action, operator
    text: str
    gpu: int | None = None
    code: int | None = None
    health: str | None = None
    workloads: list[str] = Field(default_factory=list)


class NodeWorkload(_View):
    workspace: str
    job: str
    kind: str  # job, endpoint
    rank: int
    gpus: list[int]
    state: str


class NodeDetail(_View):
    node: NodeView
    repair: str = "none"
    needs_operator: bool = False
    findings: list[dict[str, Any]] = Field(default_factory=list)
    signals: dict[str, Any] | None = Field(
        default=None, description="the node's last health report (per-GPU and node signals)"
    )
    health_at: float | None = None
    boot_id: str | None = None
    repair_claim_at: float | None = None
    last_xid: dict[str, HealthEventView] = Field(
        default_factory=dict, description="GPU index -> its last Xid and what it means"
    )
    events: list[HealthEventView] = Field(default_factory=list)
    workloads: list[NodeWorkload] = Field(default_factory=list)
    outcome: str | None = Field(default=None, description="what an operation did, in words")


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind = "xid"
    gpu: int | None = Field(default=None, ge=0, lt=1024)
    xid: int | None = Field(default=None, ge=0, le=100_000)
    subcode: int | None = Field(default=None, ge=0, le=100_000)
