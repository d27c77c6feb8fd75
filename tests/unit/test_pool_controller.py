"""The pool controller's load, apply and provider steps, on a real store with hand-made
plans: every field of a FleetPlan is written (grow, release, unmet, block), launches get
one one-use join token per instance, a refused launch rests the pool, and a released node
is terminated only once nothing runs there."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from corral.core.pools import FleetPlan, Grow, Release, decide
from corral.core.states import JobState, NodeCondition
from corral.providers.base import (
    Instance,
    InstanceState,
    JoinInfo,
    LaunchErrorKind,
    LaunchRequest,
    Provider,
    ProviderError,
)
from corral.providers.catalog import Catalog, load_catalog
from corral.server.auth import JoinTokenRejected
from corral.server.controllers import runner
from corral.server.controllers.pools import PoolController
from corral.server.runtime import ControlPlane
from corral.server.services import node_ops, pool_actions, pool_fleet
from corral.server.services.identity import bootstrap
from corral.server.services.join_tokens import consume_join_token
from corral.server.services.pools import create_pool, delete_pool
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import (
    Job,
    JoinToken,
    Node,
    Pool,
    PoolEvent,
    PoolInstance,
    Replica,
    Workspace,
)
from corral.spec.pool import NodePoolSpec
from support.store import add_run, register_node

NOW = 1000.0
URL = "http://control-plane:7390"


class Recording:
    """A provider at the boundary this test cannot reach (a cloud): it records each call
    and refuses a launch when told to."""

    name = "local"
    static = False

    def __init__(self) -> None:
        self.launched: list[LaunchRequest] = []
        self.terminated: list[str] = []
        self.refuse: ProviderError | None = None

    def launch(self, request: LaunchRequest) -> list[Instance]:
        if self.refuse is not None:
            raise self.refuse
        self.launched.append(request)
        return [
            Instance(f"id-{j.node_name}", j.node_name, request.pool, InstanceState.PENDING)
            for j in request.joins
        ]

    def list(self, pool: str | None = None) -> list[Instance]:
        return []

    def terminate(self, provider_ids: Sequence[str]) -> None:
        self.terminated.extend(provider_ids)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'corral.db'}")
    upgrade(s.engine)
    bootstrap(s, 1.0, tmp_path, "crl_admin", "crj_join")
    yield s
    s.close()


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


def _pool(store: Store, catalog: Catalog, **fields: object) -> None:
    spec = NodePoolSpec.model_validate(
        {"name": "gpu", "provider": "local", "type": "fake-h100x2", "max": 4, **fields}
    )
    with store.transaction() as session:
        create_pool(session, pool_fleet.CONTROLLER, spec, catalog, NOW)


def _apply(store: Store, catalog: Catalog, plan: FleetPlan, said: dict[str, str] | None = None):
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, NOW)
    assert load is not None
    with store.transaction() as session:
        assert pool_fleet.versions_hold(session, load)
        return pool_fleet.apply_fleet(
            session, load, plan, catalog, NOW, {} if said is None else said
        )


def _act(store: Store, catalog: Catalog, provider: Provider) -> pool_actions.Acted:
    return pool_actions.act(store, lambda name: provider, catalog, URL, lambda: NOW + 1)


def _instances(store: Store) -> list[PoolInstance]:
    with store.read() as session:
        rows = list(session.scalars(select(PoolInstance).order_by(PoolInstance.node_name)))
        session.expunge_all()
        return rows


def test_grow_requests_instances_and_launch_gives_each_a_one_use_token(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, labels={"team": "vision"}, price=7.5, join_timeout="5m")
    plan = FleetPlan(grow=(Grow("gpu", 2, ("j1",), "2 x fake-h100x2 for job j1"),))
    _, acts = _apply(store, catalog, plan)
    assert acts
    rows = _instances(store)
    assert [r.state for r in rows] == ["requested", "requested"]
    assert all(r.price_per_hour == 7.5 for r in rows)

    provider = Recording()
    acted = _act(store, catalog, provider)
    assert sorted(acted.launched) == sorted(r.node_name for r in rows)
    (request,) = provider.launched
    assert (request.pool, request.instance_type, request.region) == ("gpu", "fake-h100x2", "local")
    assert [j.node_name for j in request.joins] == [r.node_name for r in rows]
    for join in request.joins:
        assert join.server_url == URL
        assert join.labels == {
            "team": "vision",
            "pool": "gpu",
            "provider": "local",
            "region": "local",
            "instance-type": "fake-h100x2",
        }
    rows = _instances(store)
    assert [r.state for r in rows] == ["launching", "launching"]
    assert [r.provider_id for r in rows] == [f"id-{r.node_name}" for r in rows]
    with store.transaction() as session:
        tokens = {t.id: t for t in session.scalars(select(JoinToken))}
        for r in rows:
            token = tokens[r.join_token_id or ""]
            assert token.max_uses == 1 and token.expires_at == NOW + 1 + 300
            # The server sets them at registration: the agent cannot claim another pool.
            assert token.labels == request.joins[0].labels
        # Each secret registers one node, once.
        secret = request.joins[0].join_token
        consume_join_token(session, secret, NOW + 2)
        with pytest.raises(JoinTokenRejected):
            consume_join_token(session, secret, NOW + 2)
    # Nothing left to launch: a second pass asks the provider for nothing.
    assert _act(store, catalog, provider).launched == []
    assert len(provider.launched) == 1


def test_a_refused_launch_fails_its_instances_rests_the_pool_and_revokes_tokens(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 1, (), "1 to keep min_nodes 1"),)))
    provider = Recording()
    provider.refuse = ProviderError(LaunchErrorKind.CAPACITY, "no fake-h100x2 left here")
    acted = _act(store, catalog, provider)
    assert len(acted.failed) == 1
    (row,) = _instances(store)
    assert row.state == "failed" and "no fake-h100x2 left here" in (row.reason or "")
    with store.read() as session:
        pool = session.get(Pool, "gpu")
        assert pool is not None
        assert pool.blocked_until == NOW + 1 + pool_fleet.BLOCK_S
        assert pool.blocked_reason == "capacity: no fake-h100x2 left here"
        token = session.get(JoinToken, row.join_token_id)
        assert token is not None and token.revoked_at is not None


def _joined_node(store: Store, catalog: Catalog) -> str:
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 1, (), "min"),)))
    _act(store, catalog, Recording())
    (row,) = _instances(store)
    return register_node(store, row.node_name, gpus=2, labels={"pool": "gpu"})


def test_a_released_node_is_cordoned_and_terminated_once_its_work_is_gone(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    node_id = _joined_node(store, catalog)
    (row,) = _instances(store)
    # The next round sees the node registered: the instance is joined.
    _apply(store, catalog, FleetPlan())
    assert _instances(store)[0].state == "joined"
    with store.transaction() as session:
        ws = session.scalars(select(Workspace)).first()
        assert ws is not None
        add_run(session, ws.id, node_id, 2, NOW)
    _apply(store, catalog, FleetPlan(release=(Release("gpu", row.node_name, "idle for 700 s"),)))
    with store.read() as session:
        node = session.get(Node, node_id)
        assert node is not None and node.condition == NodeCondition.CORDONED
        assert "idle for 700 s" in (node.cordon_reason or "")
    assert _instances(store)[0].state == "releasing"
    provider = Recording()
    assert _act(store, catalog, provider).terminated == []
    assert provider.terminated == []  # a replica still runs there
    with store.transaction() as session:
        replica = session.get(Replica, "r")
        assert replica is not None
        replica.state, replica.finished_at = "succeeded", NOW + 5
    acted = _act(store, catalog, provider)
    assert acted.terminated == [row.node_name] and acted.hang_up == [node_id]
    assert provider.terminated == [f"id-{row.node_name}"]
    (ended,) = _instances(store)
    assert ended.state == "terminated" and ended.released_at == NOW + 1
    with store.read() as session:
        assert session.scalars(select(Node).where(Node.name == row.node_name)).first() is None


def test_block_and_unmet_are_recorded_and_an_unchanged_reason_only_once(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    said: dict[str, str] = {}
    plan = FleetPlan(
        unmet={"job-1": "no pool has 16 x H100 in one node"},
        block={"gpu": "node gpu-1 did not join within 600 s"},
    )
    _apply(store, catalog, plan, said)
    _apply(store, catalog, FleetPlan(unmet=plan.unmet), dict(plan.unmet))
    with store.read() as session:
        pool = session.get(Pool, "gpu")
        assert pool is not None and pool.blocked_until == NOW + pool_fleet.BLOCK_S
        assert pool.blocked_reason == "node gpu-1 did not join within 600 s"
        unmet = list(session.scalars(select(PoolEvent.text).where(PoolEvent.kind == "unmet")))
    assert unmet == ["job 'job-1': no pool has 16 x H100 in one node"]


def test_load_sees_waiting_gangs_but_not_quota_waits_and_free_room_of_members(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    _joined_node(store, catalog)
    with store.transaction() as session:
        ws = session.scalars(select(Workspace)).one()
        for name, reason in (
            ("big", "needs 1× 4 H100 in one node; the freest node has 2 free"),
            (
                "quota",
                "x and y; this non-preemptible job needs 4: mark it preemptible to "
                "borrow idle GPUs",
            ),
            ("new", None),
        ):
            session.add(
                Job(
                    id=name,
                    workspace_id=ws.id,
                    name=name,
                    spec={
                        "name": name,
                        "command": "true",
                        "resources": {"gpus": "H100:4"},
                        "preemptible": True,
                    },
                    state=JobState.PENDING,
                    priority=5 if name == "big" else 0,
                    reason=reason,
                    submitted_at=NOW,
                )
            )
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, NOW + 10)
    assert load is not None
    (gang,) = load.facts.waiting
    assert (gang.job_id, gang.replicas, gang.demand.gpus, gang.preemptible) == ("big", 1, 4, True)
    assert gang.priority == 5
    (member,) = load.facts.members
    assert member.joined and member.ready and member.free_gpus == 2
    assert member.idle_since is not None  # nothing runs there
    (pool,) = load.facts.pools
    assert (pool.shape.gpus, pool.max_nodes, pool.price_per_hour) == (2, 4, 0.0)


def _round(store: Store, catalog: Catalog, now: float) -> FleetPlan:
    """One controller round with the real decision: load, decide, apply."""
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, now)
    assert load is not None
    plan = decide(load.facts, now)
    with store.transaction() as session:
        assert pool_fleet.versions_hold(session, load)
        pool_fleet.apply_fleet(session, load, plan, catalog, now, {})
    return plan


def test_a_node_that_never_joins_is_released_and_its_pool_rests(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, min=1, join_timeout=60)
    plan = _round(store, catalog, NOW)
    assert [(g.pool, g.count) for g in plan.grow] == [("gpu", 1)]
    provider = Recording()
    pool_actions.act(store, lambda name: provider, catalog, URL, lambda: NOW)
    (row,) = _instances(store)
    assert row.state == "launching"
    # No node registers: a round within the bound waits, one past it gives the node back.
    assert _round(store, catalog, NOW + 30) == FleetPlan()
    plan = _round(store, catalog, NOW + 61)
    assert [r.reason for r in plan.release] == ["did not join within 60 s"]
    with store.read() as session:
        pool = session.get(Pool, "gpu")
        assert pool is not None and pool.blocked_until == NOW + 61 + pool_fleet.BLOCK_S
    pool_actions.act(store, lambda name: provider, catalog, URL, lambda: NOW + 62)
    assert provider.terminated == [f"id-{row.node_name}"]
    (ended,) = _instances(store)
    assert ended.state == "terminated"
    with store.read() as session:
        token = session.get(JoinToken, ended.join_token_id)
        assert token is not None and token.revoked_at == NOW + 62
    # Resting: min_nodes is not chased into the same failure meanwhile.
    assert _round(store, catalog, NOW + 70).grow == ()


def test_a_pool_deleted_with_force_releases_its_nodes_then_goes(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    _joined_node(store, catalog)
    _round(store, catalog, NOW + 1)  # joined
    with store.transaction() as session:
        gone, _ = delete_pool(session, pool_fleet.CONTROLLER, "gpu", True, NOW + 2)
    assert not gone
    plan = _round(store, catalog, NOW + 3)
    assert len(plan.release) == 1
    provider = Recording()
    acted = pool_actions.act(store, lambda name: provider, catalog, URL, lambda: NOW + 4)
    assert len(acted.terminated) == 1
    _round(store, catalog, NOW + 5)
    with store.read() as session:
        assert session.get(Pool, "gpu") is None
        assert session.scalars(select(PoolEvent).where(PoolEvent.pool == "gpu")).first() is None


def test_a_cloud_pool_is_not_launched_toward_a_loopback_control_plane(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, provider="aws", type="g5.xlarge", region="us-east-1")
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 1, (), "min"),)))
    provider = Recording()
    acted = pool_actions.act(
        store, lambda name: provider, catalog, "http://127.0.0.1:7390", lambda: NOW
    )
    assert len(acted.failed) == 1 and provider.launched == []
    (row,) = _instances(store)
    assert row.state == "failed"
    assert "set CORRAL_PUBLIC_URL to an address they reach" in (row.reason or "")


def test_a_pools_warm_spares_reach_the_autoscaler_and_it_grows_for_them(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, spare=2)
    plan = _round(store, catalog, NOW)
    assert [(g.pool, g.count) for g in plan.grow] == [("gpu", 2)]
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, NOW + 1)
    assert load is not None
    (pool,) = load.facts.pools
    assert pool.spare_nodes == 2
    # Two booting spares are enough: nothing more is asked for.
    assert decide(load.facts, NOW + 1).grow == ()


class Listing(Recording):
    """A provider that also has instances of its own (a cloud's list), and may refuse to
    terminate."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[Instance] = []
        self.refuse_terminate: ProviderError | None = None
        self.terminate_calls = 0

    def list(self, pool: str | None = None) -> list[Instance]:
        return list(self.listed)

    def terminate(self, provider_ids: Sequence[str]) -> None:
        self.terminate_calls += 1
        if self.refuse_terminate is not None:
            raise self.refuse_terminate
        super().terminate(provider_ids)
        self.listed = [i for i in self.listed if i.provider_id not in provider_ids]


def _events(store: Store, kind: str) -> list[str]:
    with store.read() as session:
        query = select(PoolEvent.text).where(PoolEvent.kind == kind).order_by(PoolEvent.id)
        return list(session.scalars(query))


def test_a_joined_node_deleted_by_hand_is_released_without_resting_the_pool(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, min=1)
    node_id = _joined_node(store, catalog)
    _round(store, catalog, NOW + 1)
    (row,) = _instances(store)
    assert row.state == "joined" and row.node_id == node_id  # cost finds it after a delete
    with store.transaction() as session:
        node_ops.delete_node(session, pool_fleet.CONTROLLER, row.node_name)
    plan = _round(store, catalog, NOW + 2)
    assert [(r.instance, r.reason) for r in plan.release] == [
        (row.node_name, "its node was deleted")
    ]
    assert plan.block == {}
    assert [(g.pool, g.count) for g in plan.grow] == [("gpu", 1)]  # min_nodes, at once
    provider = Recording()
    acted = pool_actions.act(store, lambda name: provider, catalog, URL, lambda: NOW + 3)
    assert acted.terminated == [row.node_name]
    assert provider.terminated == [f"id-{row.node_name}"]
    with store.read() as session:
        pool = session.get(Pool, "gpu")
        assert pool is not None and pool.blocked_until is None


def test_a_spot_interrupted_node_is_gone_to_the_autoscaler(store: Store, catalog: Catalog) -> None:
    _pool(store, catalog)
    node_id = _joined_node(store, catalog)
    why = "spot interruption: the instance is reclaimed at 1060"
    with store.transaction() as session:
        node = session.get(Node, node_id)
        assert node is not None
        node.condition, node.cordon_reason = NodeCondition.CORDONED, why
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, NOW + 1)
    assert load is not None
    (member,) = load.facts.members
    assert member.gone == why and not member.ready
    with store.transaction() as session:
        node = session.get(Node, node_id)
        assert node is not None
        node.cordon_reason = "cordoned by ops"  # only cordoned: not gone
    with store.read() as session:
        load = pool_fleet.load_fleet(session, catalog, NOW + 1)
    assert load is not None and load.facts.members[0].gone is None


def test_requested_instances_of_a_deleting_pool_are_not_launched(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 1, (), "min"),)))
    with store.transaction() as session:
        delete_pool(session, pool_fleet.CONTROLLER, "gpu", True, NOW)
    with store.read() as session:
        pool = session.get(Pool, "gpu")
        assert pool is not None and pool.deleting  # it waits for its instances
    provider = Recording()
    _act(store, catalog, provider)
    assert provider.launched == []
    (row,) = _instances(store)
    assert row.state == "failed" and row.join_token_id is None


def test_a_stray_instance_is_terminated_after_the_join_timeout(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, join_timeout=120)
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 2, (), "min"),)))
    provider = Listing()
    provider.refuse = ProviderError(LaunchErrorKind.UNREACHABLE, "read timeout")
    memory = pool_actions.Memory()

    def act(at: float) -> pool_actions.Acted:
        return pool_actions.act(store, lambda name: provider, catalog, URL, lambda: at, memory)

    act(NOW)
    failed = _instances(store)[0]
    assert failed.state == "failed"
    # The launch "failed" but one instance came up; another is the pool's live one.
    _apply(store, catalog, FleetPlan(grow=(Grow("gpu", 1, (), "min"),)))
    provider.refuse = None
    act(NOW + 1)  # the sweep ran at NOW: not again before SWEEP_S
    live = next(r for r in _instances(store) if r.state == "launching")
    provider.listed = [
        Instance("i-stray", failed.node_name, "gpu", InstanceState.RUNNING),
        Instance(f"id-{live.node_name}", live.node_name, "gpu", InstanceState.RUNNING),
    ]
    t = NOW + pool_actions.SWEEP_S
    assert act(t).strays == []  # first seen: within the grace
    assert act(t + pool_actions.SWEEP_S).strays == []  # 60 s < 120 s
    acted = act(t + 3 * pool_actions.SWEEP_S)
    assert acted.strays == ["i-stray"] and provider.terminated == ["i-stray"]
    assert [i.provider_id for i in provider.listed] == [f"id-{live.node_name}"]
    (text,) = _events(store, "stray")
    assert text.startswith(f"terminated i-stray ({failed.node_name}): local had it for 180 s")


def test_a_refused_termination_backs_off_and_says_each_error_once(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog)
    _joined_node(store, catalog)
    _round(store, catalog, NOW + 1)
    (row,) = _instances(store)
    _apply(store, catalog, FleetPlan(release=(Release("gpu", row.node_name, "idle"),)))
    provider = Listing()
    provider.refuse_terminate = ProviderError(LaunchErrorKind.AUTH, "credentials expired")
    memory = pool_actions.Memory(next_sweep=float("inf"))

    def act(at: float) -> pool_actions.Acted:
        return pool_actions.act(store, lambda name: provider, catalog, URL, lambda: at, memory)

    act(NOW + 2)
    act(NOW + 3)  # within the first backoff: not asked
    assert provider.terminate_calls == 1
    act(NOW + 2 + pool_actions.RETRY_FIRST_S)
    assert provider.terminate_calls == 2
    act(NOW + 2 + 2 * pool_actions.RETRY_FIRST_S)  # the delay doubled: not yet
    assert provider.terminate_calls == 2
    assert len(_events(store, "error")) == 1  # the same error: said once
    provider.refuse_terminate = ProviderError(LaunchErrorKind.UNREACHABLE, "endpoint down")
    act(NOW + 2 + 3 * pool_actions.RETRY_FIRST_S)
    assert provider.terminate_calls == 3
    assert ["endpoint down" in e for e in _events(store, "error")] == [False, True]
    provider.refuse_terminate = None
    acted = act(NOW + 2 + 3 * pool_actions.RETRY_FIRST_S + 4 * pool_actions.RETRY_FIRST_S)
    assert acted.terminated == [row.node_name]


class _LosesCommits:
    """The store, except that a write transaction rolls back at its end (a commit lost to
    a conflict): what the controller publishes must wait for a commit that happened."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lose = True

    def read(self) -> AbstractContextManager[Session]:
        return self.store.read()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.store.transaction() as session:
            yield session
            if self.lose:
                raise StaleDataError("the commit was lost")


def test_supply_notes_and_unmet_reasons_are_published_only_after_the_commit(
    store: Store, catalog: Catalog
) -> None:
    _pool(store, catalog, max=0)  # the job waits: no pool can hold it
    with store.transaction() as session:
        ws = session.scalars(select(Workspace)).one()
        session.add(
            Job(
                id="big",
                workspace_id=ws.id,
                name="big",
                spec={"name": "big", "command": "true", "resources": {"gpus": "H100:2"}},
                state=JobState.PENDING,
                priority=0,
                reason="needs 1x 2 H100; no node has them",
                submitted_at=NOW,
            )
        )
    woken: list[bool] = []
    losing = _LosesCommits(store)
    cp = SimpleNamespace(
        store=losing,
        catalog=catalog,
        supply_notes={},
        clock=SimpleNamespace(now=lambda: NOW),
        wake_scheduler=lambda: woken.append(True),
    )
    controller = PoolController(cast(ControlPlane, cp))
    rounds = runner.Runner(controller)
    done = rounds.round(cast(ControlPlane, cp))
    assert done.again  # the commit was lost...
    controller.committed(done)
    assert cp.supply_notes == {} and controller.unmet_said == {} and woken == []  # ...so silent
    losing.lose = False
    controller.committed(rounds.round(cast(ControlPlane, cp)))
    assert cp.supply_notes["big"].startswith("no pool can hold 1 x")
    assert controller.unmet_said.keys() == {"big"} and woken == [True]


def test_a_server_without_local_pools_starts_no_local_agent_but_still_stops_them(
    tmp_path: Path, catalog: Catalog
) -> None:
    from corral.providers.registry import ProviderSettings, provider_for

    off = provider_for("local", ProviderSettings(home=tmp_path, catalog=catalog))
    join = JoinInfo("http://127.0.0.1:1", "crj_x", "gpu-abc")
    request = LaunchRequest("gpu", "fake-h100x2", "local", None, None, False, (join,))
    with pytest.raises(ProviderError, match="CORRAL_ALLOW_LOCAL_POOLS=1"):
        off.launch(request)
    assert not (tmp_path / "local-nodes").exists()  # nothing was started
    assert off.list() == [] and off.terminate(["gpu-abc"]) is None  # clean-up still works
