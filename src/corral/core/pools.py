"""The fleet autoscaler: which node pools to grow, and which nodes to give back. Pure.

`decide(facts, now) -> FleetPlan`: no I/O, no clock reads. The server's pool controller
and `corral sim` call the same function. One round:

1. Members launched more than `join_timeout_s` ago that have not joined are released, and
   their pool is blocked for this round (`FleetPlan.block`: the caller keeps it blocked a
   while), so the next-cheapest choice is tried. Members whose machine is gone (`gone`:
   interrupted, lost, node deleted) are released at once, and joined members that are
   not ready (cordoned, unhealthy) once idle past `idle_grace_s`: neither counts against
   `max_nodes` from then on, so a replacement can grow in the same round.
2. Pools below `min_nodes` grow to it.
3. Waiting gangs, highest priority then oldest first, go where they fit: idle ready nodes
   and nodes still booting first (the room left on busy nodes is the scheduler's to use),
   then the cheapest new nodes (spot first for preemptible work, and only for it), never
   past `max_nodes`, never in a blocked pool, at most `max_launch_per_round` new nodes in
   all. New nodes' spare room serves later gangs. A gang that fits nowhere gets a reason
   in words (`FleetPlan.unmet`).
4. Warm spares: a pool with `spare_nodes` keeps that many whole nodes no waiting gang was
   given (idle ready ones, or booting ones), launching more when work took them, within
   `max_nodes`: the next jobs start at once instead of after a boot.
5. Nodes idle past `idle_grace_s` that no waiting gang was given are released, longest
   idle first, never below `min_nodes` nor `spare_nodes` spares, never one with work,
   never a static pool's; idle nodes above `max_nodes` (it was lowered) at once.

Ties are broken by name, so the same facts give the same plan whatever their order.
The fitting arithmetic (shapes, selectors, one node or one pool) is in `pools_fit.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core.placement import Demand
from corral.core.pools_fit import Fit, Room, fit_in_pool, mismatch, one_node, per_node
from corral.core.scheduler.filters import SPOT_LABEL, SPOT_VALUE, avoids_spot
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
    # Whole nodes kept idle (or booting) ahead of demand, so a job does not wait a boot.
    spare_nodes: int = 0
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
    # Why its machine is going or gone (a spot interruption, its agent lost, its node
    # deleted by hand), or None: such a member is given back at once, its pool not blocked.
    gone: str | None = None


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
    priority: int = 0  # the scheduler serves higher first: so does the autoscaler


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
    # Pools to block now (pool -> why): a node of theirs did not join in time. The caller
    # sets the pool's blocked_until (with its backoff), so the next choice is tried.
    block: Mapping[str, str] = field(default_factory=dict)


def decide(facts: FleetFacts, now: float) -> FleetPlan:
    """Which pools to grow and which nodes to give back (see the module's docstring)."""
    r = _Round(facts, now)
    r.release_unusable()
    r.grow_to_min()
    for gang in sorted(facts.waiting, key=lambda g: (-g.priority, g.submitted_at, g.job_id)):
        r.place(gang)
    r.keep_spares()
    r.release_idle()
    return r.plan()


@dataclass
class _Growth:
    count: int = 0
    for_jobs: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class _Round:
    """One decision's working state: live node counts, free rooms, growth, releases."""

    def __init__(self, facts: FleetFacts, now: float) -> None:
        self.now = now
        self.pools = {p.name: p for p in sorted(facts.pools, key=lambda p: p.name)}
        self.members = sorted(
            (m for m in facts.members if m.pool in self.pools),
            key=lambda m: (m.pool, m.instance),
        )
        self.budget = facts.max_launch_per_round
        self.live = {name: 0 for name in self.pools}  # members that stay, new ones included
        self.rooms: dict[str, list[Room]] = {name: [] for name in self.pools}
        self.used: set[tuple[str, str]] = set()  # members a waiting gang was given
        self.gone: set[tuple[str, str]] = set()  # members released as unusable
        self.growth: dict[str, _Growth] = {}
        self.release: list[Release] = []
        self.block: dict[str, str] = {}
        self.unmet: dict[str, str] = {}

    def blocked(self, pool: PoolFacts) -> str | None:
        if pool.name in self.block:
            return self.block[pool.name]
        if pool.blocked_until is not None and pool.blocked_until > self.now:
            why = f": {pool.blocked_reason}" if pool.blocked_reason else ""
            return f"blocked for {pool.blocked_until - self.now:.0f} s more{why}"
        return None

    def release_unusable(self) -> None:
        """Late, gone and long-idle unready members go; the rest count and give room."""
        for m in self.members:
            pool = self.pools[m.pool]
            if m.releasing:
                continue
            why = None if pool.static else self._unusable(pool, m)
            if why is not None:
                self.release.append(Release(pool.name, m.instance, why))
                self.gone.add((pool.name, m.instance))
                if not m.joined and m.gone is None:
                    self.block.setdefault(pool.name, f"node {m.instance} {why}")
                continue
            self.live[pool.name] += 1
            if not m.joined:
                shape = pool.shape
                room = Room(pool.name, m.instance, shape.gpus, shape.cpus, shape.memory_mb, True)
                self.rooms[pool.name].append(room)
            elif m.ready and m.idle_since is not None:
                # Only idle nodes: the room left on busy ones is room the scheduler already
                # could not use for these gangs (or holds for a reservation).
                room = Room(
                    pool.name, m.instance, m.free_gpus, m.free_cpus, m.free_memory_mb, False
                )
                self.rooms[pool.name].append(room)
        for rooms in self.rooms.values():
            # Ready nodes first (work starts sooner there), then booting ones; by name.
            rooms.sort(key=lambda room: (room.booting, room.instance))

    def _unusable(self, pool: PoolFacts, m: PoolMember) -> str | None:
        if m.gone is not None:
            return m.gone  # not the pool's fault: it is not blocked
        if not m.joined:
            if self.now - m.launched_at >= pool.join_timeout_s:
                return f"did not join within {pool.join_timeout_s:g} s"
            return None
        if not m.ready and m.idle_since is not None:
            # Cordoned or unhealthy, and nothing runs there: it takes no work while it
            # is billed. Given the grace (an operator may be looking at it), then back.
            idle_s = self.now - m.idle_since
            if idle_s >= pool.idle_grace_s:
                return f"not ready and idle for {idle_s:.0f} s"
        return None

    def add_nodes(self, pool: PoolFacts, count: int, reason: str) -> list[Room]:
        growth = self.growth.setdefault(pool.name, _Growth())
        shape = pool.shape
        new = [
            Room(pool.name, f"+{growth.count + i}", shape.gpus, shape.cpus, shape.memory_mb, True)
            for i in range(count)
        ]
        growth.count += count
        growth.reasons.append(reason)
        self.live[pool.name] += count
        self.budget -= count
        self.rooms[pool.name].extend(new)
        return new

    def grow_to_min(self) -> None:
        for pool in self.pools.values():
            short = min(pool.min_nodes, pool.max_nodes) - self.live[pool.name]
            if pool.static or short <= 0 or self.blocked(pool) is not None:
                continue
            count = min(short, self.budget)
            if count > 0:
                self.add_nodes(pool, count, f"{count} to keep min_nodes {pool.min_nodes}")

    def place(self, gang: WaitingGang) -> None:
        choices: list[tuple[tuple[bool, int, bool, float, str], PoolFacts, Fit]] = []
        never: list[str] = []
        not_now: list[str] = []
        for pool in self.pools.values():
            fit, why, forever = self._fit(gang, pool)
            if fit is None:
                (never if forever else not_now).append(f"{pool.name}: {why}")
                continue
            new_cost = fit.new_nodes * pool.price_per_hour
            key = (
                fit.new_nodes > 0,  # room already paid for first
                0 if gang.preemptible and pool.spot else 1,  # spot first for preemptible
                fit.new_nodes > 0 and pool.price_per_hour <= 0,  # unpriced last
                new_cost,
                pool.name,
            )
            choices.append((key, pool, fit))
        if not choices:
            self.unmet[gang.job_id] = _unmet_reason(gang, never, not_now, bool(self.pools))
            return
        _, pool, fit = min(choices, key=lambda c: c[0])
        self._commit(gang, pool, fit)

    def _fit(self, gang: WaitingGang, pool: PoolFacts) -> tuple[Fit | None, str, bool]:
        """How the gang fits in this pool now, or why not and whether that is forever."""
        if pool.spot and avoids_spot(gang.preemptible, gang.node_selector):
            # As the scheduler rules (its filters): the job could not run on these nodes.
            return None, "spot nodes are only for preemptible jobs", True
        labels = pool_labels(pool)
        why = mismatch(pool.shape, labels, gang.demand, gang.node_selector)
        if why is not None:
            return None, why, True
        whole = one_node(gang.topology, labels)
        fit = fit_in_pool(self.rooms[pool.name], pool.shape, gang.demand, gang.replicas, whole)
        k = per_node(pool.shape, gang.demand)
        if fit is None:
            return None, f"one node holds {k} replicas, the job needs {gang.replicas} on one", True
        if fit.new_nodes == 0:
            return fit, "", False
        if pool.static:
            return None, "static pool (hosts added by hand): busy", False
        blocked = self.blocked(pool)
        if blocked is not None:
            return None, blocked, False
        if not whole and k * pool.max_nodes < gang.replicas:
            most = f"{pool.max_nodes} nodes x {k} replicas"
            return None, f"holds at most {most}, the job needs {gang.replicas}", True
        if self.live[pool.name] + fit.new_nodes > pool.max_nodes:
            return None, f"at max_nodes {pool.max_nodes}", False
        if fit.new_nodes > self.budget:
            limit = f"{self.budget} more new nodes this round"
            return None, f"needs {fit.new_nodes} new nodes, {limit}", False
        return fit, "", False

    def _commit(self, gang: WaitingGang, pool: PoolFacts, fit: Fit) -> None:
        rooms = self.rooms[pool.name]
        for i, n in fit.taken:
            rooms[i].take(gang.demand, n)
            self.used.add((pool.name, rooms[i].instance))
        left = gang.replicas - sum(n for _, n in fit.taken)
        if fit.new_nodes == 0:
            return
        kind = "spot" if pool.spot else "on-demand"
        price = f"${pool.price_per_hour:.2f}/h each" if pool.price_per_hour > 0 else "unpriced"
        what = f"{fit.new_nodes} x {pool.instance_type} ({kind}, {price}) in {pool.region}"
        for room in self.add_nodes(pool, fit.new_nodes, f"{what} for job {gang.job_id}"):
            self.used.add((pool.name, room.instance))
            n = room.holds(gang.demand, left)
            room.take(gang.demand, n)
            left -= n
        self.growth[pool.name].for_jobs.append(gang.job_id)

    def spares(self, pool: PoolFacts) -> int:
        """Whole nodes of the pool no waiting gang was given: idle ready ones, booting ones."""
        return sum(
            1 for room in self.rooms[pool.name] if (pool.name, room.instance) not in self.used
        )

    def keep_spares(self) -> None:
        for pool in self.pools.values():
            if pool.spare_nodes <= 0 or pool.static or self.blocked(pool) is not None:
                continue
            short = pool.spare_nodes - self.spares(pool)
            count = min(short, pool.max_nodes - self.live[pool.name], self.budget)
            if count > 0:
                self.add_nodes(pool, count, f"{count} to keep spare_nodes {pool.spare_nodes}")

    def release_idle(self) -> None:
        spare = {name: self.spares(pool) for name, pool in self.pools.items()}
        idle = [
            m
            for m in self.members
            if m.joined
            and not m.releasing
            and m.idle_since is not None
            and (m.pool, m.instance) not in self.used
            and (m.pool, m.instance) not in self.gone
            and not self.pools[m.pool].static
        ]
        for m in sorted(idle, key=lambda m: (m.idle_since or 0.0, m.pool, m.instance)):
            pool = self.pools[m.pool]
            idle_s = self.now - (m.idle_since or 0.0)
            keep = self.live[pool.name] <= pool.min_nodes or spare[pool.name] <= pool.spare_nodes
            if idle_s >= pool.idle_grace_s and not keep:
                why = f"idle for {idle_s:.0f} s"
            elif self.live[pool.name] > pool.max_nodes:
                # Its max was lowered (`corral pool scale`): idle nodes above it go at once.
                why = f"idle, and the pool is above its max_nodes {pool.max_nodes}"
            else:
                continue
            self.live[pool.name] -= 1
            spare[pool.name] -= 1
            self.release.append(Release(pool.name, m.instance, why))

    def plan(self) -> FleetPlan:
        grow = tuple(
            Grow(name, g.count, tuple(g.for_jobs), "; ".join(g.reasons))
            for name, g in sorted(self.growth.items())
            if g.count > 0
        )
        return FleetPlan(grow, tuple(self.release), dict(self.unmet), dict(self.block))


def pool_labels(pool: PoolFacts) -> dict[str, str]:
    """The labels every node of the pool registers with (the pool's own, then corral's).

    A spot pool's nodes carry `spot=true`: the scheduler keeps non-preemptible jobs off
    them (core/scheduler/filters.py)."""
    labels = dict(pool.labels)
    labels.update(
        {
            "pool": pool.name,
            "provider": pool.provider,
            "region": pool.region,
            "instance-type": pool.instance_type,
        }
    )
    if pool.zone:
        labels["zone"] = pool.zone
    if pool.spot:
        labels[SPOT_LABEL] = SPOT_VALUE
    return labels


def _unmet_reason(gang: WaitingGang, never: list[str], not_now: list[str], any_pool: bool) -> str:
    if not any_pool:
        return "no node pools to grow: add one with `corral pool create`"
    where = " on one node" if gang.topology == "node" else ""
    ask = f"{gang.replicas} x ({gang.demand.describe()}){where}"
    if not_now:
        return f"no pool can grow for {ask} now: " + "; ".join(not_now + never)
    return f"no pool can hold {ask}: " + "; ".join(never)
