"""NodePoolSpec: nodes of one shape from one provider, grown and shrunk by the autoscaler."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.spec.names import check_name
from corral.spec.units import parse_duration_s

DEFAULT_IDLE_AFTER_S = 600.0
DEFAULT_JOIN_TIMEOUT_S = 600.0
MAX_POOL_NODES = 10_000
# Label keys corral sets on the nodes it makes or adds (topology, spot, the ssh record that
# `corral node remove` reads, the price cost is counted at): a pool may not set them itself.
RESERVED_LABELS = frozenset(
    {
        "pool",
        "provider",
        "region",
        "zone",
        "instance-type",
        "spot",
        "ssh-host",
        "ssh-port",
        "ssh-user",
        "ssh-install-dir",
        "price-per-hour",
    }
)
# Where the pool's own field says it instead.
_RESERVED_HINTS = {"spot": " (use spot: true, --spot)", "price-per-hour": " (use price, --price)"}
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$")


def _duration(value: Any) -> float:
    return parse_duration_s(value)


class NodePoolSpec(BaseModel):
    """What an operator asks for; `corral pool create` and `POST /v1/pools` take it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="unique in the cluster; nodes are named <pool>-<n>")
    provider: str = Field(description="where nodes come from: aws, local (ssh pools are static)")
    type: str = Field(description="the provider's instance type, from the price catalog")
    region: str = Field(default="local", description="the provider's region")
    zone: str | None = None
    image: str | None = Field(default=None, description="machine image; default: the provider's")
    spot: bool = False
    min: int = Field(default=0, ge=0, le=MAX_POOL_NODES)
    max: int = Field(default=1, ge=0, le=MAX_POOL_NODES)
    # Whole nodes kept idle (or booting) ahead of demand, so a burst's first jobs start
    # without waiting a boot; paid for around the clock (bench/autoscale_cost.py).
    spare: int = Field(default=0, ge=0, le=MAX_POOL_NODES)
    labels: dict[str, str] = Field(default_factory=dict, description="on every node of the pool")
    price: float | None = Field(
        default=None, ge=0, description="USD per node-hour, overriding the catalog's"
    )
    idle_after: float = Field(
        default=DEFAULT_IDLE_AFTER_S, description="a node idle this long is given back"
    )
    join_timeout: float = Field(
        default=DEFAULT_JOIN_TIMEOUT_S,
        description="a node that has not joined this long after launch is replaced",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "pool name")

    @field_validator("provider", "type", "region")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("idle_after", "join_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in RESERVED_LABELS:
                hint = _RESERVED_HINTS.get(key, "")
                raise ValueError(f"label {key!r} is set by corral on pool nodes{hint}")
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r}: use letters, digits, '-', '_', '.', '/'")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> NodePoolSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be more than max ({self.max})")
        if self.spare > self.max:
            raise ValueError(f"spare ({self.spare}) must not be more than max ({self.max})")
        return self


class PoolScale(BaseModel):
    """`corral pool scale NAME --min/--max/--spare`: any of them."""

    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(default=None, ge=0, le=MAX_POOL_NODES)
    max: int | None = Field(default=None, ge=0, le=MAX_POOL_NODES)
    spare: int | None = Field(default=None, ge=0, le=MAX_POOL_NODES)
