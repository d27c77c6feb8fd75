"""Node pools in the simulator: the fleet autoscaler (core.pools.decide) on a virtual clock.

A run with pools has no fixed cluster. Each pool is a shape from the price catalog's
`sim` provider in a region, `min..max` nodes (the pools file: sim/pools_file.py); its
nodes are launched through the sim provider (providers/sim.py), join `boot` seconds
later and are given back once idle past `idle_after`. Each placement round ends with the
autoscaler's decision, as the server's pool controller makes it after the scheduler's
round. Nodes are billed from launch to release (node-hours x the pool's price), as a
cloud bills them.

`fixed=True` is the baseline: every pool at `max` from the start, never shrunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from corral.core.placement import PendingJob
from corral.core.pools import FleetFacts, FleetPlan, PoolFacts, PoolMember, WaitingGang, decide
from corral.core.pools import pool_labels as labels_of
from corral.providers.base import JoinInfo, LaunchRequest, ProviderError
from corral.providers.sim import SimProvider
from corral.sim.pools_file import SupplySpec, load_supply, parse_supply, slot_cluster
from corral.sim.state import NodeRun

__all__ = ["Supply", "SupplySpec", "Tick", "load_supply", "parse_supply", "slot_cluster"]

BLOCK_S = 300.0  # a pool whose launch failed is not tried again for this long
HOUR_S = 3600.0


@dataclass
class _Member:
    pool: PoolFacts
    node: int  # index of its slot in the world's nodes
    provider_id: str
    launch: int  # this launch's number (a JOIN event carries it)
    launched_at: float
    joined_at: float | None = None
    released_at: float | None = None


@dataclass(frozen=True)
class Tick:
    """What the engine must schedule after a decision."""

    joins: tuple[tuple[float, int, int], ...] = ()  # (when, node index, launch number)
    wake_at: float | None = None  # the next time the autoscaler has something to do


@dataclass
class SupplyStats:
    launches: int = 0
    releases: int = 0
    launch_errors: int = 0
    peak_nodes: int = 0
    decisions: list[tuple[float, str]] = field(default_factory=list)  # (time, what)


class Supply:
    """The pools of one run: launches, joins and releases, and what the nodes cost."""

    def __init__(
        self, spec: SupplySpec, node_index: Mapping[str, int], fixed: bool = False
    ) -> None:
        self.spec = spec.fixed() if fixed else spec
        self.fixed = fixed
        self.now = 0.0
        self.provider = SimProvider(lambda: self.now, spec.boot_s, spec.capacity)
        self.pools = {p.name: p for p in self.spec.pools}
        self.free: dict[str, list[int]] = {
            p.name: [node_index[f"{p.name}-{k:03d}"] for k in range(p.max_nodes)]
            for p in self.spec.pools
        }
        self.members: dict[int, _Member] = {}  # node index -> the instance in that slot
        self.gone: list[_Member] = []  # released, for the bill
        self.blocked: dict[str, tuple[float, str]] = {}
        self.launches = 0
        self.stats = SupplyStats()

    def absent_at_start(self) -> list[int]:
        """Slots with no node at t=0 (all of them, unless fixed: then none)."""
        if self.fixed:
            for name, slots in self.free.items():
                for i in slots:
                    self._add(self.pools[name], i, f"fixed-{i}", 0.0).joined_at = 0.0
                slots.clear()
            self.stats.peak_nodes = len(self.members)
            return []
        return [i for slots in self.free.values() for i in slots]

    def _add(self, pool: PoolFacts, node: int, provider_id: str, now: float) -> _Member:
        self.launches += 1
        member = _Member(pool, node, provider_id, self.launches, now)
        self.members[node] = member
        return member

    # --- the engine's calls ------------------------------------------------------------

    def joined(self, node: int, launch: int, now: float) -> bool:
        """A JOIN event: True when that launch is still the slot's (then the node joins)."""
        member = self.members.get(node)
        if member is None or member.launch != launch or member.joined_at is not None:
            return False
        member.joined_at = now
        return True

    def tick(
        self, now: float, nodes: list[NodeRun], pending: list[PendingJob]
    ) -> tuple[Tick, list[int]]:
        """Decide and apply: returns what to schedule and the nodes that leave now."""
        self.now = now
        if self.fixed:
            return Tick(), []
        plan = decide(self.facts(now, nodes, pending), now)
        for name, why in plan.block.items():
            self.blocked[name] = (now + BLOCK_S, why)
        leaving = [self._release(r.pool, r.instance, r.reason, now, nodes) for r in plan.release]
        joins: list[tuple[float, int, int]] = []
        for grow in plan.grow:
            joins += self._grow(grow.pool, grow.count, grow.reason, now, nodes)
        self.stats.peak_nodes = max(self.stats.peak_nodes, len(self.members))
        return Tick(tuple(joins), self._wake_at(now, nodes, plan)), [i for i in leaving if i >= 0]

    def facts(self, now: float, nodes: list[NodeRun], pending: list[PendingJob]) -> FleetFacts:
        pools = []
        for p in self.spec.pools:
            until, why = self.blocked.get(p.name, (None, None))
            pools.append(replace(p, blocked_until=until, blocked_reason=why))
        members = []
        for i, m in sorted(self.members.items()):
            n = nodes[i]
            joined = m.joined_at is not None
            members.append(
                PoolMember(
                    pool=m.pool.name,
                    instance=n.spec.name,
                    launched_at=m.launched_at,
                    joined=joined,
                    ready=joined,
                    idle_since=n.idle_since if joined and not n.jobs else None,
                    free_gpus=len(n.slots) - len(n.used_gpus) if joined else 0,
                    free_cpus=n.spec.cpus - n.used_cpus if joined else 0.0,
                    free_memory_mb=n.spec.memory_mb - n.used_memory_mb if joined else 0,
                )
            )
        waiting = tuple(
            WaitingGang(
                job_id=j.id,
                replicas=j.replicas,
                demand=j.demand,
                preemptible=j.preemptible,
                submitted_at=j.submitted_at,
                topology=j.topology,
                node_selector=j.node_selector,
                priority=j.priority,
            )
            for j in pending
        )
        return FleetFacts(
            tuple(pools),
            tuple(members),
            waiting,
            max_launch_per_round=self.spec.max_launch_per_round,
        )

    def _grow(
        self, name: str, count: int, reason: str, now: float, nodes: list[NodeRun]
    ) -> list[tuple[float, int, int]]:
        pool = self.pools[name]
        slots = self.free[name][:count]
        joins = tuple(JoinInfo("sim://", "", nodes[i].spec.name, labels_of(pool)) for i in slots)
        request = LaunchRequest(
            name, pool.instance_type, pool.region, pool.zone, None, pool.spot, joins
        )
        try:
            instances = self.provider.launch(request)
        except ProviderError as exc:
            self.stats.launch_errors += 1
            self.blocked[name] = (now + BLOCK_S, str(exc))
            self.stats.decisions.append((now, f"{name}: launch failed: {exc}"))
            return []
        del self.free[name][:count]
        self.stats.launches += len(instances)
        self.stats.decisions.append((now, f"{name}: grow {reason}"))
        out = []
        for i, inst in zip(slots, instances, strict=True):
            member = self._add(pool, i, inst.provider_id, now)
            out.append((self.provider.joins_at(inst.provider_id), i, member.launch))
        return out

    def _release(
        self, name: str, instance: str, reason: str, now: float, nodes: list[NodeRun]
    ) -> int:
        """Give the instance back; its slot index when its node was in the fleet, else -1."""
        i = next(k for k, m in self.members.items() if nodes[k].spec.name == instance)
        member = self.members.pop(i)
        self.provider.terminate([member.provider_id])
        member.released_at = now
        self.gone.append(member)
        self.free[name].append(i)
        self.free[name].sort()
        self.stats.releases += 1
        self.stats.decisions.append((now, f"{name}: release {instance}: {reason}"))
        return i if member.joined_at is not None else -1

    def _wake_at(self, now: float, nodes: list[NodeRun], plan: FleetPlan) -> float | None:
        """The next time a decision could differ with nothing else happening: an idle node
        passes its grace, a launch times out, a block ends while work waits, or the launch
        budget ran out with work waiting."""
        times = []
        for i, m in self.members.items():
            n = nodes[i]
            if m.joined_at is not None and not n.jobs:
                at = n.idle_since + m.pool.idle_grace_s
            elif m.joined_at is None:
                at = m.launched_at + m.pool.join_timeout_s
            else:
                continue
            if at > now:
                times.append(at)
        if plan.unmet:
            times += [until for until, _ in self.blocked.values() if until > now]
        if sum(g.count for g in plan.grow) >= self.spec.max_launch_per_round and plan.unmet:
            times.append(now + self.spec.round_s)
        return min(times, default=None)

    # --- the bill ----------------------------------------------------------------------

    def node_seconds(self, end: float) -> dict[str, float]:
        """Seconds of node time per pool, from launch to release (or `end`)."""
        out = {p.name: 0.0 for p in self.spec.pools}
        for m in [*self.gone, *self.members.values()]:
            stop = m.released_at if m.released_at is not None else end
            out[m.pool.name] += max(0.0, min(stop, end) - m.launched_at)
        return out

    def cost(self, end: float) -> float:
        """USD: node-hours x each pool's price, until `end`."""
        seconds = self.node_seconds(end)
        return sum(seconds[p.name] / HOUR_S * p.price_per_hour for p in self.spec.pools)
