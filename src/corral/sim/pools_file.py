"""The simulator's pools file: node pools from the catalog's `sim` provider, checked.

    boot: 120                  # s from launch until a node joins
    round: 30                  # s: the controller's period while a launch waits its turn
    max_launch_per_round: 16
    pools:
      - name: b-h100           # unique
        type: h100x8           # a `sim` type of the catalog
        region: sim-b          # a region the catalog prices it in
        spot: false
        min: 0
        max: 12
        idle_after: 600        # s
        spare: 0               # whole nodes kept idle ahead of demand (warm spares)
        join_timeout: 600      # s
        price: 72.0            # USD/h per node; default: the catalog's
        labels: {tier: batch}
    capacity:                  # optional: the sim cloud runs out (launches then fail)
      - {region: sim-b, type: h100x8, count: 8}

`slot_cluster` turns the pools into the simulator's cluster: every node they could ever
have, each absent until launched (sim/supply.py runs them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.core.pools import PoolFacts
from corral.core.pools import pool_labels as labels_of
from corral.providers.catalog import Catalog, load_catalog
from corral.sim.cluster import Cluster, SimNode, read_yaml
from corral.spec.errors import FieldError, SpecError, field_errors

PROVIDER = "sim"


class _Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    type: str
    region: str
    zone: str | None = None
    spot: bool = False
    min: int = Field(default=0, ge=0)
    max: int = Field(ge=0, le=1000)
    idle_after: float = Field(default=600.0, ge=0)
    spare: int = Field(default=0, ge=0)
    join_timeout: float = Field(default=600.0, gt=0)
    price: float | None = Field(default=None, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)


class _Capacity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str
    type: str
    count: int = Field(ge=0)


class _PoolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boot: float = Field(default=120.0, ge=0)
    round: float = Field(default=30.0, gt=0)
    max_launch_per_round: int = Field(default=16, ge=1)
    pools: list[_Pool] = Field(min_length=1)
    capacity: list[_Capacity] = Field(default_factory=list)


@dataclass(frozen=True)
class SupplySpec:
    pools: tuple[PoolFacts, ...]
    boot_s: float = 120.0
    round_s: float = 30.0
    max_launch_per_round: int = 16
    capacity: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def fixed(self) -> SupplySpec:
        """The baseline: each pool held at its max all along."""
        return replace(self, pools=tuple(replace(p, min_nodes=p.max_nodes) for p in self.pools))


def parse_supply(data: Any, source: str = "pools", catalog: Catalog | None = None) -> SupplySpec:
    """A pools file's content, checked against the catalog. Raises SpecError."""
    if not isinstance(data, dict):
        raise SpecError(source, [FieldError("", "expected a mapping with `pools:`")])
    try:
        spec = _PoolsFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, field_errors(exc)) from None
    catalog = catalog or load_catalog()
    errors: list[FieldError] = []
    pools: list[PoolFacts] = []
    for i, p in enumerate(spec.pools):
        at = f"pools[{i}]"
        shape = catalog.shape(PROVIDER, p.type)
        price = catalog.price(PROVIDER, p.region, p.type, p.spot)
        if shape is None:
            known = ", ".join(sorted(catalog.shapes.get(PROVIDER, {}))) or "none"
            errors.append(FieldError(f"{at}.type", f"{p.type!r} is not a sim type ({known})"))
            continue
        if price is None and p.price is None:
            kind = "spot" if p.spot else "on-demand"
            errors.append(
                FieldError(
                    f"{at}.region",
                    f"the catalog has no {kind} price for {p.type} in {p.region!r}: "
                    "give `price:` or another region",
                )
            )
            continue
        if p.min > p.max:
            errors.append(FieldError(f"{at}.min", f"expected <= max ({p.max}), got {p.min}"))
        if p.spare > p.max:
            errors.append(FieldError(f"{at}.spare", f"expected <= max ({p.max}), got {p.spare}"))
        pools.append(
            PoolFacts(
                name=p.name,
                provider=PROVIDER,
                instance_type=p.type,
                region=p.region,
                zone=p.zone,
                spot=p.spot,
                shape=shape,
                price_per_hour=p.price if p.price is not None else (price or 0.0),
                min_nodes=p.min,
                max_nodes=p.max,
                labels=dict(p.labels),
                idle_grace_s=p.idle_after,
                spare_nodes=p.spare,
                join_timeout_s=p.join_timeout,
            )
        )
    names = [p.name for p in spec.pools]
    if len(set(names)) != len(names):
        errors.append(FieldError("pools", "two pools have the same name"))
    if errors:
        raise SpecError(source, errors)
    return SupplySpec(
        pools=tuple(pools),
        boot_s=spec.boot,
        round_s=spec.round,
        max_launch_per_round=spec.max_launch_per_round,
        capacity={(c.region, c.type): c.count for c in spec.capacity},
    )


def load_supply(path: str | Path, catalog: Catalog | None = None) -> SupplySpec:
    return parse_supply(read_yaml(path), str(path), catalog)


def slot_cluster(spec: SupplySpec) -> Cluster:
    """Every node the pools could ever have (max per pool), as the simulator's cluster:
    a run starts with them absent and a launch fills a free slot."""
    nodes = []
    for p in spec.pools:
        s = p.shape
        per_gpu = p.price_per_hour / s.gpus if s.gpus else 0.0
        for k in range(p.max_nodes):
            name = f"{p.name}-{k:03d}"
            nodes.append(
                SimNode(
                    id=name,
                    name=name,
                    gpus=s.gpus,
                    gpu_model=s.gpu_model or "",
                    gpu_memory_mb=s.gpu_memory_mb,
                    cpus=s.cpus,
                    memory_mb=s.memory_mb,
                    disk_mb=8 * 1024 * 1024,
                    topology=(p.provider, p.region, p.zone or "", "", name),
                    labels=labels_of(p),
                    price_per_gpu_hour=per_gpu,
                )
            )
    return Cluster(tuple(nodes))
