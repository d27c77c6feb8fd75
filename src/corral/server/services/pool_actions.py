"""What the pool controller asks of providers, after its plan is committed: launch the
instances it requested, terminate the ones it released once no work runs there.

Each step is: a short transaction (claim the rows, make the join tokens) -> the provider
call with no session open -> a short transaction recording what came of it. The rows say
where each instance is, so a server that stops between the steps carries on from them:
an instance claimed but never launched does not join and is released after its pool's
join_timeout; one released is terminated on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from corral.core.pools import pool_labels
from corral.core.states import ACTIVE_REPLICA_STATES
from corral.providers.base import JoinInfo, LaunchErrorKind, LaunchRequest, Provider, ProviderError
from corral.providers.catalog import Catalog
from corral.server.errors import DomainError
from corral.server.services import node_ops
from corral.server.services.join_tokens import create_join_token
from corral.server.services.pool_fleet import BLOCK_S, CONTROLLER, _pool_facts
from corral.server.services.pools import InstanceState, add_event, pool_spec
from corral.server.store.db import Store
from corral.server.store.tables import JoinToken, Node, Pool, PoolInstance, Replica

log = logging.getLogger("corral.server.pools")

ProviderFor = Callable[[str], Provider]


@dataclass(frozen=True)
class _Launch:
    pool: str
    request: LaunchRequest
    instances: tuple[str, ...]  # node names, in the order of request.joins


@dataclass
class Acted:
    launched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    hang_up: list[str] = field(default_factory=list)  # node ids deleted: close their channel


def act(
    store: Store,
    providers: ProviderFor,
    catalog: Catalog,
    server_url: str,
    now: Callable[[], float],
) -> Acted:
    acted = Acted()
    with store.transaction() as session:
        launches = _claim_requested(session, catalog, server_url, now())
    for launch in launches:
        _launch(store, providers, launch, now, acted)
    with store.read() as session:
        releasing = _releasable(session)
    for pool, name, provider_id, provider_name in releasing:
        try:
            _terminate(store, providers, pool, name, provider_id, provider_name, now, acted)
        except Exception:  # one instance's trouble must not stall the others' release
            log.exception("pool %s: releasing %s failed; trying again next pass", pool, name)
    return acted


def _claim_requested(
    session: Session, catalog: Catalog, server_url: str, now: float
) -> list[_Launch]:
    """Requested instances -> launching, each with a one-use join token that expires
    with its pool's join timeout. The secrets live only in the returned requests."""
    rows = session.scalars(
        select(PoolInstance)
        .where(PoolInstance.state == InstanceState.REQUESTED)
        .order_by(PoolInstance.pool, PoolInstance.node_name)
    ).all()
    by_pool: dict[str, list[tuple[PoolInstance, str]]] = {}
    for inst in rows:
        pool = session.get(Pool, inst.pool)
        if pool is None:
            inst.state = InstanceState.FAILED
            inst.reason = "its pool was deleted before it launched"
            continue
        spec = pool_spec(pool)
        token, secret = create_join_token(
            session,
            CONTROLLER,
            now,
            ttl_s=spec.join_timeout,
            max_uses=1,
            name=f"pool-{inst.node_name}",
        )
        inst.state = InstanceState.LAUNCHING
        inst.join_token_id = token.id
        by_pool.setdefault(inst.pool, []).append((inst, secret))
    launches: list[_Launch] = []
    for name, claimed in by_pool.items():
        row = session.get(Pool, name)
        assert row is not None
        facts = _pool_facts(row, catalog, now)
        labels = pool_labels(facts) if facts is not None else {}
        spec = pool_spec(row)
        joins = tuple(
            JoinInfo(server_url, secret, inst.node_name, labels) for inst, secret in claimed
        )
        request = LaunchRequest(
            pool=name,
            instance_type=spec.type,
            region=spec.region,
            zone=spec.zone,
            image=spec.image,
            spot=spec.spot,
            joins=joins,
        )
        launches.append(_Launch(name, request, tuple(i.node_name for i, _ in claimed)))
    return launches


def _launch(
    store: Store,
    providers: ProviderFor,
    launch: _Launch,
    now: Callable[[], float],
    acted: Acted,
) -> None:
    spec_provider = _provider_name(store, launch.pool)
    try:
        _check_reachable(spec_provider, launch.request)
        provider = providers(spec_provider)
        made = provider.launch(launch.request)
    except ProviderError as exc:
        _launch_failed(store, launch, exc, now())
        acted.failed.extend(launch.instances)
        return
    except Exception as exc:  # a provider's bug: the instances fail, the pool rests
        log.exception("pool %s: launch failed", launch.pool)
        error = ProviderError(LaunchErrorKind.INVALID, f"{type(exc).__name__}: {exc}")
        _launch_failed(store, launch, error, now())
        acted.failed.extend(launch.instances)
        return
    ids = {i.node_name: i.provider_id for i in made}
    with store.transaction() as session:
        for name in launch.instances:
            inst = _instance(session, name)
            if inst is not None:
                inst.provider_id = ids.get(name)
        kind = "spot" if launch.request.spot else "on-demand"
        add_event(
            session,
            launch.pool,
            now(),
            "launch",
            f"launched {len(made)} x {launch.request.instance_type} ({kind}): "
            + ", ".join(launch.instances),
        )
    acted.launched.extend(launch.instances)


def _check_reachable(provider: str, request: LaunchRequest) -> None:
    """Nodes elsewhere dial the control plane: a loopback URL reaches only this machine."""
    if provider == "local" or not request.joins:
        return
    url = request.joins[0].server_url
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        raise ProviderError(
            LaunchErrorKind.INVALID,
            f"{provider} nodes could not reach the control plane at {url}: set "
            "CORRAL_PUBLIC_URL to an address they reach (e.g. https://corral.example.com)",
        )


def _provider_name(store: Store, pool: str) -> str:
    with store.read() as session:
        row = session.get(Pool, pool)
        return pool_spec(row).provider if row is not None else ""


def _launch_failed(store: Store, launch: _Launch, error: ProviderError, now: float) -> None:
    with store.transaction() as session:
        for name in launch.instances:
            inst = _instance(session, name)
            if inst is None:
                continue
            inst.state = InstanceState.FAILED
            inst.released_at = now
            inst.reason = str(error)
            _revoke(session, inst, now)
        pool = session.get(Pool, launch.pool)
        if pool is not None:
            # Capacity or quota: the next-cheapest choice is tried meanwhile. Anything
            # else (credentials, a bad image) would fail again at once: rest too.
            pool.blocked_until = now + BLOCK_S
            pool.blocked_reason = f"{error.kind.value}: {error}"
            add_event(session, launch.pool, now, "error", f"launch failed ({error.kind}): {error}")


def _instance(session: Session, name: str) -> PoolInstance | None:
    return session.scalars(select(PoolInstance).where(PoolInstance.node_name == name)).first()


def _revoke(session: Session, inst: PoolInstance, now: float) -> None:
    if inst.join_token_id is None:
        return
    token = session.get(JoinToken, inst.join_token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now


def _releasable(session: Session) -> list[tuple[str, str, str | None, str]]:
    """Releasing instances whose node runs nothing (or never joined): pool, node name,
    provider id, provider name."""
    out: list[tuple[str, str, str | None, str]] = []
    rows = session.scalars(
        select(PoolInstance).where(PoolInstance.state == InstanceState.RELEASING)
    ).all()
    for inst in rows:
        node = session.scalars(select(Node).where(Node.name == inst.node_name)).first()
        if node is not None:
            busy = session.scalars(
                select(Replica.id).where(
                    Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES)
                )
            ).first()
            if busy is not None:
                continue  # its work leaves first (drained, or it ends)
        pool = session.get(Pool, inst.pool)
        provider = pool_spec(pool).provider if pool is not None else "local"
        out.append((inst.pool, inst.node_name, inst.provider_id, provider))
    return out


def _terminate(
    store: Store,
    providers: ProviderFor,
    pool: str,
    name: str,
    provider_id: str | None,
    provider_name: str,
    now: Callable[[], float],
    acted: Acted,
) -> None:
    try:
        provider = providers(provider_name)
        if provider_id is None:
            # Claimed but its launch not recorded (a restart in between): ask the provider.
            provider_id = next(
                (i.provider_id for i in provider.list(pool) if i.node_name == name), None
            )
        if provider_id is not None:
            provider.terminate([provider_id])
    except ProviderError as exc:
        with store.transaction() as session:
            add_event(session, pool, now(), "error", f"terminating {name} failed: {exc}")
        return
    try:
        with store.transaction() as session:
            inst = _instance(session, name)
            if inst is None:
                return
            inst.state = InstanceState.TERMINATED
            inst.released_at = now()
            _revoke(session, inst, now())
            node = session.scalars(select(Node).where(Node.name == name)).first()
            if node is not None:
                acted.hang_up.append(node_ops.delete_node(session, CONTROLLER, name))
            add_event(session, pool, now(), "terminate", f"{name} terminated: {inst.reason or ''}")
    except (DomainError, StaleDataError) as exc:  # changed meanwhile: the next pass again
        log.warning("pool %s: %s not deleted yet: %s", pool, name, exc)
        return
    acted.terminated.append(name)
