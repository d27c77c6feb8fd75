"""The simulator's provider: instances that exist only on a virtual clock. No I/O.

`corral sim` launches nodes through it exactly as the server launches cloud machines: a
`LaunchRequest` in, `Instance`s out. An instance is PENDING until `boot_s` after its
launch, when its agent would have joined (`joins_at` says when: the simulator schedules
the join then), RUNNING after, TERMINATED once terminated. Optional per-(region, type)
capacity makes launches fail with CAPACITY as a cloud does when it has none left, so the
autoscaler's fallback to the next-cheapest pool can be simulated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from corral.providers.base import (
    Instance,
    InstanceState,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)


@dataclass
class _Booting:
    instance: Instance
    joins_at: float


class SimProvider:
    """A Provider on the simulator's clock (`clock()` returns the virtual now)."""

    static = False

    def __init__(
        self,
        clock: Callable[[], float],
        boot_s: float = 120.0,
        capacity: Mapping[tuple[str, str], int] | None = None,
        name: str = "sim",
    ) -> None:
        self.name = name
        self.clock = clock
        self.boot_s = boot_s
        # (region, instance type) -> instances it can run at once; absent: unlimited.
        self.capacity = dict(capacity or {})
        self._instances: dict[str, _Booting] = {}
        self._next_id = 0

    def _running(self, region: str, instance_type: str) -> int:
        return sum(
            1
            for b in self._instances.values()
            if b.instance.region == region
            and b.instance.instance_type == instance_type
            and b.instance.state is not InstanceState.TERMINATED
        )

    def launch(self, request: LaunchRequest) -> list[Instance]:
        limit = self.capacity.get((request.region, request.instance_type))
        if (
            limit is not None
            and self._running(request.region, request.instance_type) + len(request.joins) > limit
        ):
            raise ProviderError(
                LaunchErrorKind.CAPACITY,
                f"sim: no {request.instance_type} capacity left in {request.region} "
                f"(at most {limit}): try another region or type",
            )
        now = self.clock()
        out = []
        for join in request.joins:
            self._next_id += 1
            instance = Instance(
                provider_id=f"sim-{self._next_id:06d}",
                node_name=join.node_name,
                pool=request.pool,
                state=InstanceState.PENDING,
                instance_type=request.instance_type,
                region=request.region,
                zone=request.zone,
                spot=request.spot,
            )
            self._instances[instance.provider_id] = _Booting(instance, now + self.boot_s)
            out.append(instance)
        return out

    def joins_at(self, provider_id: str) -> float:
        """When the instance's agent joins (its boot ends), on the virtual clock."""
        return self._instances[provider_id].joins_at

    def list(self, pool: str | None = None) -> list[Instance]:
        now = self.clock()
        out = []
        for booting in self._instances.values():
            inst = booting.instance
            if pool is not None and inst.pool != pool:
                continue
            if inst.state is InstanceState.PENDING and now >= booting.joins_at:
                inst = replace(inst, state=InstanceState.RUNNING)
            out.append(inst)
        return out

    def terminate(self, provider_ids: Sequence[str]) -> None:
        for pid in provider_ids:
            booting = self._instances.get(pid)
            if booting is not None:
                booting.instance = replace(booting.instance, state=InstanceState.TERMINATED)
