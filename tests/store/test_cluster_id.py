"""The control plane's id (services/cluster.py): made once, the same for every session and
every server on the store, whoever asks first."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import boto3
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from corral.providers.base import InstanceState, JoinInfo, LaunchRequest
from corral.providers.catalog import Catalog
from corral.server.controllers.pools import PoolController
from corral.server.runtime import ControlPlane
from corral.server.services import cluster
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import ClusterSetting
from support.aws import REGION, moto_ec2

DEADLINE_S = 30.0


def _rows(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(ClusterSetting)) or 0)


def test_made_once_and_stable_across_sessions(store: Store) -> None:
    with store.read() as session:
        assert cluster.stored_cluster_id(session) is None
    with store.transaction() as session:
        made = cluster.cluster_id(session)
    assert len(made) == 32 and int(made, 16) >= 0  # uuid4 hex
    with store.transaction() as session:
        assert cluster.cluster_id(session) == made
    with store.read() as session:
        assert cluster.stored_cluster_id(session) == made
    # Another server on the same database (its own engine and pool) agrees.
    other = Store(store.url)
    try:
        with other.transaction() as session:
            assert cluster.cluster_id(session) == made
    finally:
        other.close()
    assert _rows(store) == 1


def test_concurrent_first_calls_agree(store: Store) -> None:
    servers = [Store(store.url) for _ in range(4)]
    start = threading.Barrier(8)
    got: list[str] = []
    errors: list[BaseException] = []

    def first(server: Store) -> None:
        try:
            start.wait(DEADLINE_S)
            with server.transaction() as session:
                got.append(cluster.cluster_id(session))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first, args=(servers[i % 4],)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S)
    finally:
        for server in servers:
            server.close()
    assert errors == []
    assert len(got) == 8 and len(set(got)) == 1
    assert _rows(store) == 1


def test_the_loser_of_a_race_takes_the_winners_id(store: Store) -> None:
    """The winner has inserted but not committed when the loser looks: the loser's insert
    waits, is refused once the winner commits, its savepoint is rolled back, and it returns
    the winner's id in a transaction that still commits. (On SQLite the loser waits at
    BEGIN instead, and then simply reads it.)"""
    got: list[str] = []
    errors: list[BaseException] = []

    def loser() -> None:
        try:
            with Session(store.engine) as session, session.begin():
                got.append(cluster.cluster_id(session))
        except BaseException as exc:
            errors.append(exc)

    with Session(store.engine) as winner, winner.begin():
        made = cluster.cluster_id(winner)
        thread = threading.Thread(target=loser)
        thread.start()
        if store.engine.dialect.name == "postgresql":
            deadline = time.monotonic() + DEADLINE_S
            while not _a_session_waits(store) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _a_session_waits(store), "the loser's insert never waited on the winner"
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert errors == []
    assert got == [made]
    assert _rows(store) == 1


def _a_session_waits(store: Store) -> bool:
    """Whether a session on this database waits for another's lock (PostgreSQL)."""
    with Session(store.engine) as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(waiting)


def _controller(store: Store, home: Path) -> PoolController:
    cp = SimpleNamespace(
        store=store,
        catalog=Catalog(),
        options=SimpleNamespace(home=home, allow_local_pools=False),
    )
    return PoolController(cast(ControlPlane, cp))


def test_the_pool_controllers_aws_provider_is_scoped_to_this_control_plane(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the pool controller, as the sweep gets it: instances carry the store's id,
    another server on the same store sees them, a control plane on another store does not."""
    with moto_ec2(monkeypatch) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # boto3 reads it: the controller's path
        launched = (
            _controller(store, tmp_path)
            .provider("aws")
            .launch(LaunchRequest("gpu", "g5.xlarge", REGION, None, "ami-1", False, _joins("n-1")))
        )
        with store.read() as session:
            ours = cluster.stored_cluster_id(session)
        assert ours is not None
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
        reply = ec2.describe_instances(InstanceIds=[launched[0].provider_id])
        tags = {t["Key"]: t["Value"] for t in reply["Reservations"][0]["Instances"][0]["Tags"]}
        assert tags["corral:cluster"] == ours

        second = Store(store.url)  # another server on the same store
        other = Store(f"sqlite:///{tmp_path / 'other.db'}")  # another control plane
        try:
            same = _controller(second, tmp_path).provider("aws")
            assert [i.node_name for i in same.list()] == ["n-1"]
            upgrade(other.engine)
            elsewhere = _controller(other, tmp_path).provider("aws")
            assert elsewhere.list() == []
            elsewhere.terminate([launched[0].provider_id])
            (still,) = same.list()
            assert still.state in (InstanceState.PENDING, InstanceState.RUNNING)
        finally:
            second.close()
            other.close()


def _joins(*names: str) -> tuple[JoinInfo, ...]:
    return tuple(JoinInfo("http://10.0.0.1:7390", f"jt-{n}", n) for n in names)
