"""Resources a replica asks for: `gpus: H100:8`, `cpus`, `memory`, `disk`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from corral.spec.units import parse_size_mib


def _mib(value: int | None) -> str | None:
    # Sizes leave as explicit "NMi" strings so a stored spec reads back as the same size.
    return None if value is None else f"{value}Mi"


_GPU_SHORT = re.compile(r"^(?:(?P<type>[A-Za-z][\w.-]*)(?::(?P<count>-?\d+))?|(?P<only>-?\d+))$")


class GpuRequest(BaseModel):
    """How many GPUs, of which model, with at least how much memory each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=0, ge=0, le=1024)
    type: str | None = Field(default=None, description="GPU model, e.g. H100 (case-insensitive)")
    min_memory: int | None = Field(
        default=None, ge=0, description="minimum memory per GPU in MiB (accepts 80Gi, 40GB)"
    )

    @field_validator("min_memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size_mib(value)

    @field_serializer("min_memory")
    def _dump_min_memory(self, value: int | None) -> str | None:
        return _mib(value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("GPU type must not be empty")
        return value.strip() if value else value

    def __str__(self) -> str:
        if self.count == 0:
            return "0"
        return f"{self.type}:{self.count}" if self.type else str(self.count)


def parse_gpus(value: Any) -> Any:
    """Accept `H100:8`, `H100` (one), `8`, an int, or a mapping {count, type, min_memory}."""
    if value is None:
        return {"count": 0}
    if isinstance(value, bool):
        raise ValueError("expected a GPU request such as H100:8, 8 or {count: 8, type: H100}")
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, str):
        match = _GPU_SHORT.match(value.strip())
        if not match:
            raise ValueError(
                f"{value!r} is not a GPU request; expected TYPE:COUNT (H100:8), TYPE or COUNT"
            )
        if match.group("only") is not None:
            return {"count": int(match.group("only"))}
        count = match.group("count")
        return {"type": match.group("type"), "count": int(count) if count is not None else 1}
    return value


class Resources(BaseModel):
    """Per-replica resources. Memory and disk are held in MiB."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: GpuRequest = Field(default_factory=GpuRequest)
    cpus: float = Field(default=1.0, gt=0, le=4096)
    memory: int = Field(default=512, ge=0, description="MiB (accepts 16Gi, 512Mi, 32 = GiB)")
    disk: int = Field(default=0, ge=0, description="MiB (accepts 100Gi, 1Ti)")

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return parse_gpus(value)

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return parse_size_mib(value)

    @field_serializer("memory", "disk")
    def _dump_size(self, value: int) -> str | None:
        return _mib(value)
