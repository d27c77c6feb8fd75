"""The simulated cluster: nodes with GPUs, a topology path, labels and a price.

Three ways to get one: `gpus_cluster(512)` (the `--gpus N` shorthand), `load_cluster(path)`
(a YAML file, below), or a trace's own node list (`traces.openb.load_openb_nodes`).

    providers:
      - name: aws
        regions:
          - name: us-east-1
            zones:
              - name: a
                racks:
                  - name: nvl          # racks are named nvl-0, nvl-1, ...
                    count: 2           # racks of this shape
                    nodes: 18          # nodes per rack (a rack is one NVLink domain)
                    gpus: 4
                    gpu_model: GB200
                    gpu_memory: 186Gi
                    cpus: 144
                    memory: 864Gi
                    price_per_gpu_hour: 6.0
                    labels: {tier: prod}
    quotas:                            # workspace -> GPU model ("*": any) -> guaranteed GPUs
      team-a: {GB200: 64}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.spec.errors import FieldError, SpecError, field_errors
from corral.spec.units import parse_size_mib


@dataclass(frozen=True)
class SimNode:
    id: str
    name: str
    gpus: int
    gpu_model: str
    gpu_memory_mb: int
    cpus: float
    memory_mb: int
    disk_mb: int
    topology: tuple[str, ...] = ()  # provider/region/zone/rack/node
    labels: Mapping[str, str] = field(default_factory=dict)
    price_per_gpu_hour: float = 0.0


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[SimNode, ...]
    quotas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def max_gpus_per_node(self) -> int:
        return max((n.gpus for n in self.nodes), default=0)


def gpus_cluster(
    gpus: int,
    *,
    per_node: int = 8,
    model: str = "H100",
    rack_nodes: int = 4,
    price_per_gpu_hour: float = 2.5,
) -> Cluster:
    """`--gpus N`: N/8 nodes x 8 GPUs (a last, smaller node takes any remainder).

    Nodes are H100 80 GB with 96 CPUs and 1 TiB each, in racks of `rack_nodes` in one zone.
    """
    if gpus < 1:
        raise SpecError("--gpus", [FieldError("", f"expected at least 1 GPU, got {gpus}")])
    sizes = [per_node] * (gpus // per_node) + ([gpus % per_node] if gpus % per_node else [])
    nodes = []
    for i, size in enumerate(sizes):
        name = f"node-{i:04d}"
        nodes.append(
            SimNode(
                id=name,
                name=name,
                gpus=size,
                gpu_model=model,
                gpu_memory_mb=81920,
                cpus=96.0,
                memory_mb=1024 * 1024,
                disk_mb=8 * 1024 * 1024,
                topology=("sim", "region-1", "zone-a", f"rack-{i // rack_nodes:03d}", name),
                price_per_gpu_hour=price_per_gpu_hour,
            )
        )
    return Cluster(tuple(nodes))


def _size(value: Any) -> int:
    return parse_size_mib(value)


class _Rack(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int = Field(default=1, ge=1)
    nodes: int = Field(ge=1)
    gpus: int = Field(ge=0)
    gpu_model: str = "H100"
    gpu_memory: int = 81920
    cpus: float = Field(default=96.0, gt=0)
    memory: int = 1024 * 1024
    disk: int = 8 * 1024 * 1024
    price_per_gpu_hour: float = Field(default=0.0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)

    _sizes = field_validator("gpu_memory", "memory", "disk", mode="before")(_size)


class _Zone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    racks: list[_Rack] = Field(min_length=1)


class _Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    zones: list[_Zone] = Field(min_length=1)


class _Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    regions: list[_Region] = Field(min_length=1)


class _ClusterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: list[_Provider] = Field(min_length=1)
    quotas: dict[str, dict[str, int]] = Field(default_factory=dict)


def parse_cluster(data: Any, source: str = "") -> Cluster:
    if not isinstance(data, dict):
        raise SpecError(source, [FieldError("", "expected a mapping with `providers:`")])
    try:
        spec = _ClusterFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, field_errors(exc)) from None
    nodes: list[SimNode] = []
    for p in spec.providers:
        for r in p.regions:
            for z in r.zones:
                for rack in z.racks:
                    for k in range(rack.count):
                        rack_name = f"{rack.name}-{k}" if rack.count > 1 else rack.name
                        for i in range(rack.nodes):
                            name = f"{p.name}-{r.name}-{z.name}-{rack_name}-n{i}"
                            nodes.append(
                                SimNode(
                                    id=name,
                                    name=name,
                                    gpus=rack.gpus,
                                    gpu_model=rack.gpu_model,
                                    gpu_memory_mb=rack.gpu_memory,
                                    cpus=rack.cpus,
                                    memory_mb=rack.memory,
                                    disk_mb=rack.disk,
                                    topology=(p.name, r.name, z.name, rack_name, name),
                                    labels=dict(rack.labels),
                                    price_per_gpu_hour=rack.price_per_gpu_hour,
                                )
                            )
    if len({n.id for n in nodes}) != len(nodes):
        raise SpecError(source, [FieldError("providers", "two racks produce the same node names")])
    return Cluster(tuple(nodes), spec.quotas)


def read_yaml(path: str | Path) -> object:
    """A simulator input file's YAML; a file that cannot be read or parsed is one SpecError."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(str(path), [FieldError("", f"cannot read file: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [FieldError("", f"invalid YAML: {exc}")]) from None


def load_cluster(path: str | Path) -> Cluster:
    return parse_cluster(read_yaml(path), str(path))
