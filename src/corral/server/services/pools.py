"""Node pools: create, read, scale and delete them (cluster admins change; anyone reads),
and their events. The autoscaler's side (facts, plans) is services/pool_fleet.py."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from corral.providers.catalog import Catalog
from corral.providers.registry import KNOWN, is_static
from corral.server.auth import Principal
from corral.server.config import ALLOW_LOCAL_POOLS_ENV
from corral.server.errors import Conflict, Forbidden, Invalid, NotFound
from corral.server.services import node_ops
from corral.server.services.costs import node_price
from corral.server.services.effects import Effects
from corral.server.store.tables import RETIRED_PREFIX, Node, Pool, PoolEvent, PoolInstance
from corral.spec.errors import field_errors
from corral.spec.pool import NodePoolSpec, PoolScale
from corral.wire.pools import InstanceView, PoolEventView, PoolView

EVENTS_KEPT = 50  # per pool: `pool get` shows the newest; older ones are dropped
EVENTS_SHOWN = 20
FLEET = ""  # the pool of events about the whole fleet (work no pool can hold)
# "for job 'train-1'", "job 3f2a...": which jobs a pool grew for is the business of their
# workspace; a reader who is not a cluster admin sees "a job".
_JOB_REF = re.compile(r"\bjob (?:'[^']*'|[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)")


class InstanceState(enum.StrEnum):
    REQUESTED = "requested"  # decided; the provider not asked yet
    LAUNCHING = "launching"  # the provider was asked; its agent has not joined
    JOINED = "joined"  # its node registered
    RELEASING = "releasing"  # being given back: cordoned, terminated once idle
    TERMINATED = "terminated"
    FAILED = "failed"  # the provider refused it


LIVE_STATES = frozenset(
    {
        InstanceState.REQUESTED,
        InstanceState.LAUNCHING,
        InstanceState.JOINED,
        InstanceState.RELEASING,
    }
)


def _admin(caller: Principal, verb: str) -> None:
    if not caller.cluster_admin:
        raise Forbidden(f"only a cluster admin can {verb} a node pool")


def pool_spec(row: Pool) -> NodePoolSpec:
    return NodePoolSpec.model_validate(row.spec)


def check_spec(spec: NodePoolSpec, catalog: Catalog) -> None:
    """The provider and the type must be ones this control plane knows (static pools'
    hosts are whatever was added: their type is free)."""
    if spec.provider not in KNOWN:
        message = f"unknown provider {spec.provider!r}; expected one of: {', '.join(KNOWN)}"
        raise Invalid(message, [{"path": "provider", "message": message}])
    if is_static(spec.provider):
        return
    if catalog.shape(spec.provider, spec.type) is None:
        known = ", ".join(sorted(catalog.shapes.get(spec.provider, {}))) or "none"
        message = (
            f"unknown instance type {spec.type!r} for provider {spec.provider}; "
            f"known types: {known} (add it to the price catalog, CORRAL_CATALOG)"
        )
        raise Invalid(message, [{"path": "type", "message": message}])
    _check_priced(spec, catalog)


def check_allowed(spec: NodePoolSpec, allow_local: bool) -> None:
    """A local pool's agents run on the server's machine as its user, unconfined: only a
    server started to allow it (a one-machine dev cluster: `corral up`) takes one."""
    if spec.provider == "local" and not allow_local:
        raise Forbidden(
            "local pools run agents as the server's own user on its machine: this server "
            f"does not allow them (start it with {ALLOW_LOCAL_POOLS_ENV}=1, as `corral up` "
            "does, only on a one-machine cluster)"
        )


def _check_priced(spec: NodePoolSpec, catalog: Catalog) -> None:
    """A provider the catalog prices (aws) must be asked where it has this type: a pool
    in a region the catalog does not know is almost always a missing --region."""
    if spec.price is not None:
        return
    priced = {
        region: price.for_(spec.spot)
        for (provider, region, itype), price in catalog.prices.items()
        if provider == spec.provider and itype == spec.type
    }
    regions = sorted(r for r, amount in priced.items() if amount is not None)
    if not priced or spec.region in regions:
        return  # a type the catalog prices nowhere (local): unpriced, chosen last
    kind = "spot " if spec.spot else ""
    message = (
        f"the catalog has no {kind}price for {spec.type} in region {spec.region!r}; "
        f"regions with one: {', '.join(regions) or 'none'} (or give the pool its own --price)"
    )
    raise Invalid(message, [{"path": "region", "message": message}])


def add_event(session: Session, pool: str, at: float, kind: str, text: str) -> None:
    session.add(PoolEvent(pool=pool, at=at, kind=kind, text=text[:2000]))
    session.flush()
    count = session.scalar(select(func.count()).where(PoolEvent.pool == pool)) or 0
    if count > EVENTS_KEPT:
        old = select(PoolEvent.id).where(PoolEvent.pool == pool).order_by(PoolEvent.id)
        ids = list(session.scalars(old.limit(count - EVENTS_KEPT)))
        session.execute(delete(PoolEvent).where(PoolEvent.id.in_(ids)))


def create_pool(
    session: Session, caller: Principal, spec: NodePoolSpec, catalog: Catalog, now: float
) -> Pool:
    _admin(caller, "create")
    check_spec(spec, catalog)
    if session.get(Pool, spec.name) is not None:
        raise Conflict(f"a node pool named '{spec.name}' already exists")
    row = Pool(
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        created_at=now,
        deleting=False,
    )
    session.add(row)
    add_event(session, spec.name, now, "create", f"created by {caller.token_name}")
    session.flush()
    return row


def get_pool_row(session: Session, name: str) -> Pool:
    row = session.get(Pool, name)
    if row is None:
        raise NotFound.of(f"node pool '{name}'")
    return row


def scale_pool(session: Session, caller: Principal, name: str, body: PoolScale, now: float) -> Pool:
    _admin(caller, "scale")
    row = get_pool_row(session, name)
    spec = pool_spec(row)
    if row.deleting:
        raise Conflict(f"node pool '{name}' is being deleted")
    asked = (("min", body.min), ("max", body.max), ("spare", body.spare))
    changes = {k: v for k, v in asked if v is not None}
    if not changes:
        message = "give --min, --max or --spare"
        raise Invalid(message, [{"path": "min", "message": message}])
    try:
        scaled = NodePoolSpec.model_validate({**spec.model_dump(mode="json"), **changes})
    except ValidationError as exc:
        errors = field_errors(exc)
        raise Invalid(
            "; ".join(str(e) for e in errors),
            [{"path": e.path or "min", "message": e.message} for e in errors],
        ) from None
    row.spec = scaled.model_dump(mode="json")
    add_event(
        session,
        name,
        now,
        "scale",
        f"scaled to min {scaled.min}, max {scaled.max}"
        + (f", {scaled.spare} spare" if scaled.spare else "")
        + f" by {caller.token_name}",
    )
    return row


def live_instances(session: Session, pool: str | None = None) -> list[PoolInstance]:
    query = select(PoolInstance).where(PoolInstance.state.in_([s.value for s in LIVE_STATES]))
    if pool is not None:
        query = query.where(PoolInstance.pool == pool)
    return list(session.scalars(query.order_by(PoolInstance.launched_at, PoolInstance.node_name)))


def static_nodes(session: Session, pool: str) -> list[Node]:
    """The hosts of a static pool: registered nodes labelled pool=<pool> (`corral node add
    --pool`), which no instance row tracks; not a deleted one (kept for its history)."""
    rows = session.execute(select(Node.name, Node.labels).order_by(Node.name)).all()
    names = [
        name
        for name, labels in rows
        if (labels or {}).get("pool") == pool and not name.startswith(RETIRED_PREFIX)
    ]
    if not names:
        return []
    return list(session.scalars(select(Node).where(Node.name.in_(names)).order_by(Node.name)))


def _node_names(session: Session, row: Pool) -> list[str]:
    names = [m.node_name for m in live_instances(session, row.name)]
    if is_static(pool_spec(row).provider):
        names += [n.name for n in static_nodes(session, row.name) if n.name not in names]
    return names


def delete_pool(
    session: Session, caller: Principal, name: str, force: bool, now: float
) -> tuple[bool, Effects]:
    """Delete the pool: at once when it has no nodes; with `force`, its nodes are drained
    and released first (the pool controller removes the row once they are gone; a static
    pool's hosts are drained and stay registered: `corral node remove` uninstalls them).
    True when the row is gone now."""
    _admin(caller, "delete")
    row = get_pool_row(session, name)
    members = _node_names(session, row)
    effects = Effects()
    if members and not force:
        raise Conflict(
            f"node pool '{name}' still has {len(members)} node(s): scale it to 0 and wait, "
            f"or delete it with --force (drains and releases them)"
        )
    for member in members:
        node = node_ops.node_named(session, member)
        if node is not None:
            _, drained, _ = node_ops.drain(session, caller, member, now)
            effects.merge(drained)
    if not members or is_static(pool_spec(row).provider):
        session.delete(row)
        session.execute(delete(PoolEvent).where(PoolEvent.pool == name))
        return True, effects
    row.deleting = True
    add_event(session, name, now, "delete", f"deleting: {len(members)} node(s) drained")
    return False, effects


def pool_view(
    session: Session,
    row: Pool,
    catalog: Catalog,
    *,
    detail: bool = False,
    live: Iterable[PoolInstance] | None = None,
    admin: bool = False,
) -> PoolView:
    """`admin`: the reader is a cluster admin, who also sees the fleet's events (which
    name jobs of every workspace) and the jobs a pool grew for."""
    spec = pool_spec(row)
    shape = catalog.shape(spec.provider, spec.type)
    live_rows = list(live) if live is not None else live_instances(session, row.name)
    members = {m.node_name for m in live_rows}
    if is_static(spec.provider):
        members |= {n.name for n in static_nodes(session, row.name)}
    instances: list[InstanceView] = []
    events: list[PoolEventView] = []
    if detail:
        shown = select(PoolInstance).where(PoolInstance.pool == row.name)
        rows = session.scalars(shown.order_by(PoolInstance.launched_at.desc()).limit(50))
        instances = [instance_view(i, admin) for i in rows]
        shown_pools = [row.name, FLEET] if admin else [row.name]
        newest = (
            select(PoolEvent)
            .where(PoolEvent.pool.in_(shown_pools))
            .order_by(PoolEvent.id.desc())
            .limit(EVENTS_SHOWN)
        )
        events = [
            PoolEventView(at=e.at, kind=e.kind, text=_readable(e.text, admin))
            for e in session.scalars(newest)
        ]
    return PoolView(
        spec=spec,
        static=is_static(spec.provider),
        price_per_hour=node_price(spec, catalog),
        gpus_per_node=shape.gpus if shape else 0,
        gpu_model=shape.gpu_model if shape else None,
        nodes=len(members),
        blocked_until=row.blocked_until,
        blocked_reason=row.blocked_reason,
        created_at=row.created_at,
        instances=instances,
        events=events,
    )


def _readable(text: str, admin: bool) -> str:
    return text if admin else _JOB_REF.sub("a job", text)


def instance_view(row: PoolInstance, admin: bool = False) -> InstanceView:
    return InstanceView(
        node=row.node_name,
        state=row.state,
        provider_id=row.provider_id,
        launched_at=row.launched_at,
        joined_at=row.joined_at,
        released_at=row.released_at,
        price_per_hour=row.price_per_hour,
        reason=None if row.reason is None else _readable(row.reason, admin),
    )


def pool_views(session: Session, catalog: Catalog) -> list[PoolView]:
    rows = list(session.scalars(select(Pool).order_by(Pool.name)))
    live: dict[str, list[PoolInstance]] = {}
    for member in live_instances(session):
        live.setdefault(member.pool, []).append(member)
    return [pool_view(session, r, catalog, live=live.get(r.name, [])) for r in rows]
