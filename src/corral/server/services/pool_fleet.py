"""The pool controller's store side: the fleet facts the autoscaler decides on, and the
plan written back (instance rows, releases, blocked pools, why work cannot be placed).

Provider calls are not here: they happen after commit (services/pool_actions.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from corral.core import pools as core
from corral.core.scheduler import reasons
from corral.core.states import ACTIVE_REPLICA_STATES, JobState, NodeCondition
from corral.providers.base import Shape
from corral.providers.catalog import Catalog
from corral.providers.registry import is_static
from corral.server.auth import Principal
from corral.server.services import node_ops
from corral.server.services.costs import node_price
from corral.server.services.effects import Effects
from corral.server.services.pools import (
    FLEET,
    InstanceState,
    add_event,
    live_instances,
    pool_spec,
    static_nodes,
)
from corral.server.services.snapshot_rows import demand_of
from corral.server.services.specs import specs_by_id
from corral.server.store.tables import Job, Node, Pool, PoolEvent, PoolInstance, Replica

# Who the controller acts as when it cordons or deletes a node it releases.
CONTROLLER = Principal(
    token_id="pool-controller",
    token_name="the pool controller",
    role="admin",
    workspace_id=None,
    workspace=None,
)
BLOCK_S = 300.0  # a pool whose provider refused (or whose node never joined) rests this long
# A pending job waiting on its workspace's quota gains nothing from more nodes.
_QUOTA_WAIT = reasons.QUOTA_BLOCKED.split(": ")[-1]


@dataclass(frozen=True)
class FleetLoad:
    """What the controller decides on, and the versions its plan is guarded by."""

    facts: core.FleetFacts
    pool_versions: Mapping[str, int]
    instance_versions: Mapping[str, int]  # node name -> version
    # Instances whose node has registered since last round: node name -> the node's id.
    joined: Mapping[str, str] = field(default_factory=dict)
    gone: tuple[str, ...] = ()  # deleting pools with no node left: remove them
    job_names: Mapping[str, str] = field(default_factory=dict)


def pool_facts(row: Pool, catalog: Catalog, now: float) -> core.PoolFacts | None:
    """The autoscaler's view of a pool row (None: the catalog no longer has its type)."""
    spec = pool_spec(row)
    shape = catalog.shape(spec.provider, spec.type)
    static = is_static(spec.provider)
    if shape is None:
        if not static:
            return None  # the catalog lost its type: nothing to decide on (create checked it)
        shape = Shape(None, 0, 0.0, 0)
    deleting = row.deleting
    return core.PoolFacts(
        name=row.name,
        provider=spec.provider,
        instance_type=spec.type,
        region=spec.region,
        zone=spec.zone,
        spot=spec.spot,
        shape=shape,
        price_per_hour=node_price(spec, catalog) or 0.0,
        min_nodes=0 if deleting else spec.min,
        max_nodes=0 if deleting else spec.max,
        spare_nodes=0 if deleting else spec.spare,
        labels=dict(spec.labels),
        static=static,
        idle_grace_s=0.0 if deleting else spec.idle_after,
        join_timeout_s=spec.join_timeout,
        blocked_until=row.blocked_until,
        blocked_reason=row.blocked_reason,
    )


def load_fleet(session: Session, catalog: Catalog, now: float) -> FleetLoad | None:
    rows = list(session.scalars(select(Pool).order_by(Pool.name)))
    if not rows:
        return None
    pools = [p for r in rows if (p := pool_facts(r, catalog, now)) is not None]
    instances = live_instances(session)
    names = [i.node_name for i in instances]
    nodes = {n.name: n for n in session.scalars(select(Node).where(Node.name.in_(names)))}
    # A static pool's hosts joined by hand (`corral node add --pool`): no instance rows.
    hosts = [
        (p.name, n)
        for p in pools
        if p.static
        for n in static_nodes(session, p.name)
        if n.name not in nodes
    ]
    ids = [n.id for n in nodes.values()] + [n.id for _, n in hosts]
    held = _held(session, ids)
    last_end = _last_end(session, ids)
    members: list[core.PoolMember] = []
    joined: dict[str, str] = {}
    for inst in instances:
        node = nodes.get(inst.node_name)
        if node is not None and inst.state in (InstanceState.REQUESTED, InstanceState.LAUNCHING):
            joined[inst.node_name] = node.id
        members.append(_member(inst, node, held, last_end))
    for pool, node in hosts:
        host = PoolInstance(
            pool=pool,
            node_name=node.name,
            state=InstanceState.JOINED,
            launched_at=node.registered_at,
            joined_at=node.registered_at,
        )
        members.append(_member(host, node, held, last_end))
    live_pools = {i.pool for i in instances}
    gone = tuple(r.name for r in rows if r.deleting and r.name not in live_pools)
    waiting, job_names = _waiting(session)
    return FleetLoad(
        facts=core.FleetFacts(tuple(pools), tuple(members), waiting),
        pool_versions={r.name: r.version for r in rows},
        instance_versions={i.node_name: i.version for i in instances},
        joined=joined,
        gone=gone,
        job_names=job_names,
    )


@dataclass
class _Held:
    gpus: int = 0
    cpus: float = 0.0
    memory_mb: int = 0


def _held(session: Session, node_ids: list[str]) -> dict[str, _Held]:
    out: dict[str, _Held] = {}
    if not node_ids:
        return out
    active = select(Replica).where(
        Replica.node_id.in_(node_ids), Replica.state.in_(ACTIVE_REPLICA_STATES)
    )
    for r in session.scalars(active):
        h = out.setdefault(r.node_id, _Held())
        h.gpus += len(r.gpus or [])
        h.cpus += r.cpus
        h.memory_mb += r.memory_mb
    return out


def _last_end(session: Session, node_ids: list[str]) -> dict[str, float]:
    if not node_ids:
        return {}
    rows = session.execute(
        select(Replica.node_id, func.max(Replica.finished_at))
        .where(Replica.node_id.in_(node_ids))
        .group_by(Replica.node_id)
    )
    return {node_id: end for node_id, end in rows if end is not None}


def _member(
    inst: PoolInstance,
    node: Node | None,
    held: Mapping[str, _Held],
    last_end: Mapping[str, float],
) -> core.PoolMember:
    releasing = inst.state == InstanceState.RELEASING
    if node is None:
        # Joined, and its node is gone since (deleted by hand): its instance goes too.
        was_joined = inst.state == InstanceState.JOINED
        return core.PoolMember(
            pool=inst.pool,
            instance=inst.node_name,
            launched_at=inst.launched_at,
            joined=was_joined,
            ready=False,
            idle_since=None,
            releasing=releasing,
            gone="its node was deleted" if was_joined else None,
        )
    h = held.get(node.id)
    # A node registered before this launch (a name reused) is idle from the launch on.
    joined_at = inst.joined_at or max(node.registered_at, inst.launched_at)
    idle_since = None if h is not None else max(joined_at, last_end.get(node.id, joined_at))
    h = h or _Held()
    return core.PoolMember(
        pool=inst.pool,
        instance=inst.node_name,
        launched_at=inst.launched_at,
        joined=True,
        # A drained node (a spot interruption, an operator) takes no work: not ready.
        ready=node.condition == NodeCondition.READY and node.connected,
        idle_since=idle_since,
        free_gpus=max(0, len(node.gpus or []) - h.gpus),
        free_cpus=max(0.0, node.cpus - h.cpus),
        free_memory_mb=max(0, node.memory_mb - h.memory_mb),
        releasing=releasing,
        gone=_gone(node),
    )


def _gone(node: Node) -> str | None:
    """Why a node's machine is going away for good (its instance is given back at once):
    a spot interruption, or an agent silent past the deadline. A node only cordoned,
    drained by an operator or unhealthy is not: it goes once idle past the grace."""
    why = node_ops.draining(node)
    if why is not None and why.startswith(node_ops.SPOT_INTERRUPTION):
        return why
    if node.condition == NodeCondition.LOST:
        return "its node is lost (its agent went silent)"
    return None


def _waiting(session: Session) -> tuple[tuple[core.WaitingGang, ...], dict[str, str]]:
    """Pending jobs the scheduler has looked at and could not place (it gave a reason),
    except those waiting on their workspace's quota: more nodes would not start them."""
    rows = session.execute(
        select(
            Job.id, Job.name, Job.reason, Job.next_replicas, Job.submitted_at, Job.priority
        ).where(Job.state == JobState.PENDING, Job.reason.is_not(None))
    ).all()
    rows = [r for r in rows if _QUOTA_WAIT not in (r.reason or "")]
    specs = specs_by_id(session, [r.id for r in rows])
    gangs: list[core.WaitingGang] = []
    names: dict[str, str] = {}
    for r in rows:
        spec = specs.get(r.id)
        if spec is None:
            continue
        names[r.id] = r.name
        gangs.append(
            core.WaitingGang(
                job_id=r.id,
                replicas=r.next_replicas or spec.replicas,
                demand=demand_of(spec),
                preemptible=spec.preemptible,
                submitted_at=r.submitted_at,
                priority=r.priority,
                topology=spec.topology,
                node_selector=dict(spec.node_selector),
            )
        )
    return tuple(gangs), names


def supply_notes(
    facts: core.FleetFacts, plan: core.FleetPlan, before: Mapping[str, str], now: float
) -> dict[str, str]:
    """What the autoscaler is doing for each waiting job, in words, for its pending reason.

    A note stays while its job waits (the nodes grown for it are booting: later rounds
    count them as incoming and grow nothing new); a new grow or an unmet reason replaces
    it. Pools resting after a failed launch are named, so that "why is it not on the
    cheap pool" has its answer where the user looks."""
    waiting = {g.job_id for g in facts.waiting}
    notes = {job: note for job, note in before.items() if job in waiting}
    blocked = "; ".join(
        f"pool {p.name} is resting after a failed launch: {p.blocked_reason}"
        for p in facts.pools
        if p.blocked_until is not None and p.blocked_until > now and p.blocked_reason
    )
    for grow in plan.grow:
        nodes = "a node" if grow.count == 1 else f"{grow.count} nodes"
        note = f"pool {grow.pool} is adding {nodes} for it"
        for job in grow.for_jobs:
            notes[job] = f"{note}; {blocked}" if blocked else note
    for job, why in plan.unmet.items():
        notes[job] = why  # "no pool can hold ...": core.pools words it for this place
    return notes


def _named(text: str, names: Mapping[str, str]) -> str:
    for job_id, name in names.items():
        text = text.replace(f"job {job_id}", f"job '{name}'")
    return text


def versions_hold(session: Session, load: FleetLoad) -> bool:
    """Whether the pools and instances the plan was decided on are as they were read."""
    pools = {name: v for name, v in session.execute(select(Pool.name, Pool.version))}
    if pools != dict(load.pool_versions):
        return False
    live = {i.node_name: i.version for i in live_instances(session)}
    return live == dict(load.instance_versions)


def apply_fleet(
    session: Session,
    load: FleetLoad,
    plan: core.FleetPlan,
    catalog: Catalog,
    now: float,
    unmet_said: Mapping[str, str],
) -> tuple[Effects, bool]:
    """Write the plan (the caller has checked `versions_hold`). `unmet_said`: the reasons
    already recorded (job id -> text), kept by the controller so that an unchanged reason
    is not written every round; once this commits, they are `plan.unmet` (the controller
    takes them then, not before: a rolled-back round said nothing). True: a provider has
    work to do (launch or terminate)."""
    pools = {r.name: r for r in session.scalars(select(Pool))}
    instances = {i.node_name: i for i in live_instances(session)}
    effects = Effects()
    act = False
    for name, node_id in load.joined.items():
        came = instances[name]
        came.state = InstanceState.JOINED
        came.joined_at = now
        came.node_id = node_id  # its cost is found after the node is deleted (renamed)
    for grow in plan.grow:
        row = pools[grow.pool]
        spec = pool_spec(row)
        for _ in range(grow.count):
            session.add(
                PoolInstance(
                    id=secrets.token_hex(16),
                    pool=grow.pool,
                    node_name=f"{grow.pool}-{secrets.token_hex(3)}",
                    state=InstanceState.REQUESTED,
                    launched_at=now,
                    price_per_hour=node_price(spec, catalog),
                )
            )
        add_event(session, grow.pool, now, "grow", _named(grow.reason, load.job_names))
        act = True
    for release in plan.release:
        inst = instances.get(release.instance)
        if inst is None or inst.state == InstanceState.RELEASING:
            continue
        inst.state = InstanceState.RELEASING
        inst.reason = release.reason
        node = node_ops.node_named(session, inst.node_name)
        if node is not None:
            why = f"released by pool {release.pool}: {release.reason}"
            node_ops.cordon(session, CONTROLLER, node.name, now, why)
            effects.sync_nodes.add(node.id)
        add_event(session, release.pool, now, "release", f"{inst.node_name}: {release.reason}")
        act = True
    for name, why in plan.block.items():
        row = pools[name]
        row.blocked_until = now + BLOCK_S
        row.blocked_reason = why
        add_event(session, name, now, "blocked", f"blocked for {BLOCK_S:g} s: {why}")
    _record_unmet(session, plan.unmet, load.job_names, now, unmet_said)
    for name in load.gone:
        session.delete(pools[name])
        session.execute(delete(PoolEvent).where(PoolEvent.pool == name))
    return effects, act


def _record_unmet(
    session: Session,
    unmet: Mapping[str, str],
    names: Mapping[str, str],
    now: float,
    said: Mapping[str, str],
) -> None:
    for job_id, why in sorted(unmet.items()):
        if said.get(job_id) == why:
            continue
        name = names.get(job_id, job_id)
        add_event(session, FLEET, now, "unmet", f"job '{name}': {why}")


def fleet_events(session: Session, limit: int = 20) -> list[PoolEvent]:
    query = select(PoolEvent).where(PoolEvent.pool == FLEET)
    return list(session.scalars(query.order_by(PoolEvent.id.desc()).limit(limit)))
