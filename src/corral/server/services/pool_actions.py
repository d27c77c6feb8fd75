"""What the pool controller asks of providers, after its plan is committed: launch the
instances it requested, terminate the ones it released once no work runs there.

Each step is: a short transaction (claim the rows, make the join tokens) -> the provider
call with no session open -> a short transaction recording what came of it. The rows say
where each instance is, so a server that stops between the steps carries on from them:
an instance claimed but never launched does not join and is released after its pool's
join_timeout; one released is terminated on the next pass. A termination the provider
refuses is tried again with a backoff (one pool event per new error).

The sweep: now and then, each provider's instances are compared with the live rows. One
no live row knows (its launch was reported failed though it came up, its row was lost,
an undo that failed) is terminated once it has been seen for its pool's join timeout.
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
from corral.providers.base import InstanceState as ProviderState
from corral.providers.base import JoinInfo, LaunchErrorKind, LaunchRequest, Provider, ProviderError
from corral.providers.catalog import Catalog
from corral.providers.registry import is_static
from corral.server.errors import DomainError
from corral.server.services import node_ops
from corral.server.services.join_tokens import create_join_token
from corral.server.services.pool_fleet import BLOCK_S, CONTROLLER, pool_facts
from corral.server.services.pools import (
    FLEET,
    InstanceState,
    add_event,
    live_instances,
    pool_spec,
)
from corral.server.store.db import Store
from corral.server.store.tables import JoinToken, Pool, PoolInstance, Replica

log = logging.getLogger("corral.server.pools")

ProviderFor = Callable[[str], Provider]

SWEEP_S = 60.0  # how often providers' instances are compared with the rows
STRAY_GRACE_S = 600.0  # for a stray whose pool is gone (else: its pool's join timeout)
RETRY_FIRST_S = 10.0  # a refused termination is tried again after this, doubling...
RETRY_MAX_S = 600.0  # ...up to this


@dataclass
class _Retry:
    at: float
    delay: float
    error: str


@dataclass
class Memory:
    """What act() keeps between passes (the controller holds one; a restart starts
    afresh: strays are timed again, refused terminations tried at once)."""

    next_sweep: float = 0.0
    # (provider, provider id) -> when the sweep first saw it with no live row.
    strays: dict[tuple[str, str], float] = field(default_factory=dict)
    retry: dict[str, _Retry] = field(default_factory=dict)  # node name -> next termination


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
    strays: list[str] = field(default_factory=list)  # provider ids the sweep terminated


def act(
    store: Store,
    providers: ProviderFor,
    catalog: Catalog,
    server_url: str,
    now: Callable[[], float],
    memory: Memory | None = None,
) -> Acted:
    memory = Memory() if memory is None else memory
    acted = Acted()
    with store.transaction() as session:
        launches = _claim_requested(session, catalog, server_url, now())
    for launch in launches:
        _launch(store, providers, launch, now, acted)
    with store.read() as session:
        releasing = _releasable(session)
    names = {name for _, name, _, _ in releasing}
    memory.retry = {n: r for n, r in memory.retry.items() if n in names}
    for pool, name, provider_id, provider_name in releasing:
        retry = memory.retry.get(name)
        if retry is not None and retry.at > now():
            continue
        try:
            _terminate(store, providers, pool, name, provider_id, provider_name, now, acted)
        except ProviderError as exc:
            _refused(store, memory, pool, name, str(exc), now())
        except Exception as exc:  # one instance's trouble must not stall the others' release
            log.exception("pool %s: releasing %s failed; trying again later", pool, name)
            _refused(store, memory, pool, name, f"{type(exc).__name__}: {exc}", now())
        else:
            memory.retry.pop(name, None)
    if now() >= memory.next_sweep:
        memory.next_sweep = now() + SWEEP_S
        _sweep(store, providers, now, memory, acted)
    return acted


def _refused(store: Store, memory: Memory, pool: str, name: str, error: str, now: float) -> None:
    """Try again after a backoff; say so in the pool's events when the error is new."""
    before = memory.retry.get(name)
    delay = RETRY_FIRST_S if before is None else min(RETRY_MAX_S, before.delay * 2)
    memory.retry[name] = _Retry(now + delay, delay, error)
    if before is not None and before.error == error:
        return
    with store.transaction() as session:
        text = f"terminating {name} failed: {error} (tried again, less and less often)"
        add_event(session, pool, now, "error", text)


def _sweep(
    store: Store, providers: ProviderFor, now: Callable[[], float], memory: Memory, acted: Acted
) -> None:
    with store.read() as session:
        specs = {row.name: pool_spec(row) for row in session.scalars(select(Pool))}
        live = live_instances(session)
    known_ids = {i.provider_id for i in live if i.provider_id}
    known_names = {i.node_name for i in live}
    seen: set[tuple[str, str]] = set()
    for provider_name in sorted({s.provider for s in specs.values()}):
        if is_static(provider_name):
            continue  # hosts added by hand: not corral's to end
        try:
            provider = providers(provider_name)
            found = provider.list()
        except Exception as exc:  # the next sweep asks again
            log.warning("pools: listing %s instances failed: %s", provider_name, exc)
            seen.update(k for k in memory.strays if k[0] == provider_name)
            continue
        for inst in found:
            if inst.state in (ProviderState.STOPPING, ProviderState.TERMINATED):
                continue
            if inst.provider_id in known_ids or inst.node_name in known_names:
                continue
            key = (provider_name, inst.provider_id)
            seen.add(key)
            first = memory.strays.setdefault(key, now())
            spec = specs.get(inst.pool)
            grace = spec.join_timeout if spec is not None else STRAY_GRACE_S
            if now() - first < grace:
                continue
            try:
                provider.terminate([inst.provider_id])
            except Exception as exc:
                log.warning("pools: terminating stray %s failed: %s", inst.provider_id, exc)
                continue
            seen.discard(key)
            acted.strays.append(inst.provider_id)
            with store.transaction() as session:
                text = (
                    f"terminated {inst.provider_id} ({inst.node_name}): {provider_name} had it "
                    f"for {now() - first:.0f} s with no live instance of the pool"
                )
                pool = inst.pool if spec is not None else FLEET
                add_event(session, pool, now(), "stray", text)
    memory.strays = {k: t for k, t in memory.strays.items() if k in seen}


def _claim_requested(
    session: Session, catalog: Catalog, server_url: str, now: float
) -> list[_Launch]:
    """Requested instances -> launching, each with a one-use join token that expires
    with its pool's join timeout and binds the pool's labels (the node cannot change
    pool=, provider=, price labels...). The secrets live only in the returned requests."""
    rows = session.scalars(
        select(PoolInstance)
        .where(PoolInstance.state == InstanceState.REQUESTED)
        .order_by(PoolInstance.pool, PoolInstance.node_name)
    ).all()
    by_pool: dict[str, list[tuple[PoolInstance, str]]] = {}
    labels: dict[str, dict[str, str]] = {}
    for inst in rows:
        pool = session.get(Pool, inst.pool)
        if pool is None or pool.deleting:
            inst.state = InstanceState.FAILED
            inst.released_at = now
            inst.reason = "its pool was deleted before it launched"
            continue
        spec = pool_spec(pool)
        if inst.pool not in labels:
            facts = pool_facts(pool, catalog, now)
            labels[inst.pool] = pool_labels(facts) if facts is not None else {}
        token, secret = create_join_token(
            session,
            CONTROLLER,
            now,
            ttl_s=spec.join_timeout,
            max_uses=1,
            name=f"pool-{inst.node_name}",
            labels=labels[inst.pool],
        )
        inst.state = InstanceState.LAUNCHING
        inst.join_token_id = token.id
        by_pool.setdefault(inst.pool, []).append((inst, secret))
    launches: list[_Launch] = []
    for name, claimed in by_pool.items():
        row = session.get(Pool, name)
        assert row is not None
        spec = pool_spec(row)
        joins = tuple(
            JoinInfo(server_url, secret, inst.node_name, labels[name]) for inst, secret in claimed
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
        node = node_ops.node_named(session, inst.node_name)
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
    provider = providers(provider_name)
    if provider_id is None:
        # Claimed but its launch not recorded (a restart in between): ask the provider.
        provider_id = next(
            (i.provider_id for i in provider.list(pool) if i.node_name == name), None
        )
    if provider_id is not None:
        provider.terminate([provider_id])  # refused: ProviderError, the caller backs off
    try:
        with store.transaction() as session:
            inst = _instance(session, name)
            if inst is None:
                return
            inst.state = InstanceState.TERMINATED
            inst.released_at = now()
            _revoke(session, inst, now())
            node = node_ops.node_named(session, name)
            if node is not None:
                acted.hang_up.append(node_ops.delete_node(session, CONTROLLER, name))
            add_event(session, pool, now(), "terminate", f"{name} terminated: {inst.reason or ''}")
    except (DomainError, StaleDataError) as exc:  # changed meanwhile: the next pass again
        log.warning("pool %s: %s not deleted yet: %s", pool, name, exc)
        return
    acted.terminated.append(name)
