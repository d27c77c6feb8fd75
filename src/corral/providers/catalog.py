"""The price catalog: instance types (shapes) and hourly prices per provider and region.

Loaded from `catalog.yaml` beside this module, or from the file `CORRAL_CATALOG` names (an
operator's own prices). Pure data once loaded: the autoscaler and cost accounting read it,
nothing here does I/O after `load_catalog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from corral.providers.base import Shape

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
MB_PER_GB = 1024


class CatalogError(ValueError):
    """The catalog file is wrong; the message names the file, the entry and what was expected."""


@dataclass(frozen=True)
class Price:
    on_demand: float
    spot: float | None = None

    def for_(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


@dataclass(frozen=True)
class Offer:
    """One way to buy a node: a type from a provider in a region, on demand or spot."""

    provider: str
    instance_type: str
    region: str
    spot: bool
    price_per_hour: float
    shape: Shape


@dataclass(frozen=True)
class Catalog:
    # provider -> instance type -> shape
    shapes: Mapping[str, Mapping[str, Shape]] = field(default_factory=dict)
    # (provider, region, instance type) -> price
    prices: Mapping[tuple[str, str, str], Price] = field(default_factory=dict)

    def shape(self, provider: str, instance_type: str) -> Shape | None:
        return self.shapes.get(provider, {}).get(instance_type)

    def price(self, provider: str, region: str, instance_type: str, spot: bool) -> float | None:
        """USD per instance-hour, or None when the catalog does not know it."""
        price = self.prices.get((provider, region, instance_type))
        return None if price is None else price.for_(spot)

    def offers(self, provider: str | None = None) -> list[Offer]:
        """Every priced (provider, region, type, spot) the catalog knows, cheapest first."""
        out: list[Offer] = []
        for (prov, region, itype), price in self.prices.items():
            shape = self.shape(prov, itype)
            if shape is None or (provider is not None and prov != provider):
                continue
            for spot in (False, True):
                amount = price.for_(spot)
                if amount is not None:
                    out.append(Offer(prov, itype, region, spot, amount, shape))
        return sorted(out, key=lambda o: (o.price_per_hour, o.provider, o.region, o.instance_type))


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path` (default: the packaged one). Raises CatalogError."""
    path = path or DEFAULT_CATALOG
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"catalog {path}: cannot read it: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path}: not valid YAML: {exc}") from exc
    return parse_catalog(raw, str(path))


def parse_catalog(raw: Any, where: str = "catalog") -> Catalog:
    if not isinstance(raw, dict) or not isinstance(raw.get("providers"), dict):
        raise CatalogError(f"{where}: expected a mapping with a 'providers' mapping")
    shapes: dict[str, dict[str, Shape]] = {}
    prices: dict[tuple[str, str, str], Price] = {}
    for prov, body in raw["providers"].items():
        at = f"{where}: providers.{prov}"
        if not isinstance(body, dict):
            raise CatalogError(f"{at}: expected a mapping with 'types' and 'prices'")
        shapes[prov] = {
            str(t): _shape(spec, f"{at}.types.{t}") for t, spec in _mapping(body, "types", at)
        }
        for region, table in _mapping(body, "prices", at):
            if not isinstance(table, dict):
                raise CatalogError(f"{at}.prices.{region}: expected a mapping of type: price")
            for itype, spec in table.items():
                where_p = f"{at}.prices.{region}.{itype}"
                if itype not in shapes[prov]:
                    raise CatalogError(f"{where_p}: type {itype!r} is not in {at}.types")
                prices[(str(prov), str(region), str(itype))] = _price(spec, where_p)
    return Catalog(shapes=shapes, prices=prices)


def _mapping(body: dict[str, Any], key: str, at: str) -> list[tuple[str, Any]]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise CatalogError(f"{at}.{key}: expected a mapping")
    return list(value.items())


def _number(spec: dict[str, Any], key: str, at: str, default: float | None = None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CatalogError(f"{at}.{key}: expected a number >= 0, got {value!r}")
    return float(value)


def _shape(spec: Any, at: str) -> Shape:
    if not isinstance(spec, dict):
        raise CatalogError(f"{at}: expected a mapping with gpu, gpus, cpus, memory_gb")
    gpus = int(_number(spec, "gpus", at, 0))
    model = spec.get("gpu")
    if gpus and not isinstance(model, str):
        raise CatalogError(f"{at}.gpu: expected a GPU model such as H100 (it has {gpus} GPUs)")
    return Shape(
        gpu_model=model if gpus else None,
        gpus=gpus,
        cpus=_number(spec, "cpus", at),
        memory_mb=int(_number(spec, "memory_gb", at) * MB_PER_GB),
        gpu_memory_mb=int(_number(spec, "gpu_memory_gb", at, 0) * MB_PER_GB),
    )


def _price(spec: Any, at: str) -> Price:
    if not isinstance(spec, dict):
        raise CatalogError(f"{at}: expected a mapping with on_demand (and spot)")
    spot = spec.get("spot")
    return Price(
        on_demand=_number(spec, "on_demand", at),
        spot=None if spot is None else _number(spec, "spot", at),
    )
