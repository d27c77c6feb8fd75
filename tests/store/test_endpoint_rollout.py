"""An endpoint's controller against the real store and scheduler, with a hand-driven clock
and agent: rollouts where no node has room for a surge, and the reasons shown meanwhile.

The agent's part (a replica running, ready, stopped) is reported through the same service
the agent channel uses, so every step is the server's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from corral.server.controllers import endpoints as controller
from corral.server.controllers.scheduler import schedule_once
from corral.server.hub import AgentHub
from corral.server.runtime import ControlPlane
from corral.server.services import endpoints as ep
from corral.server.services import nodes
from corral.server.store.db import Store
from corral.server.store.tables import Endpoint, Job, Replica, Workspace
from corral.spec.endpoint import EndpointSpec
from corral.wire import agent as wire
from corral.wire.api import EndpointView
from support.app import app_options
from support.store import register_node


@dataclass
class Clock:
    t: float = 2000.0

    def now(self) -> float:
        return self.t


class Driver:
    """The control plane's controllers, one step at a time, and the node's agent."""

    def __init__(self, store: Store, database_url: str, home: Path) -> None:
        self.store = store
        self.clock = Clock()
        self.cp = ControlPlane(
            app_options(database_url, home), store, self.clock, AgentHub(store), 0.0
        )
        self.endpoints = controller.EndpointController()
        self.node = register_node(store, "small", cpus=2, memory_mb=4096)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.t += seconds
        controller.reconcile_once(self.cp, self.endpoints)
        schedule_once(self.cp)

    def agent(self) -> None:
        """What the agent reports: placed replicas run and pass readiness; stopped ones exit."""
        with self.store.transaction() as session:
            for replica in session.scalars(
                select(Replica).where(Replica.state.in_(("assigned", "running")))
            ):
                if replica.desired == "stop":
                    report = wire.ReplicaReport(replica_id=replica.id, phase="exited", exit_code=0)
                else:
                    report = wire.ReplicaReport(replica_id=replica.id, phase="running", ready=True)
                nodes.replica_report(session, self.node, report, self.clock.t)

    def deploy(self, spec: EndpointSpec) -> None:
        with self.store.transaction() as session:
            ep.deploy(session, self._workspace(session), spec, self.clock.t)

    def update(self, name: str, spec: EndpointSpec) -> None:
        with self.store.transaction() as session:
            ep.update(session, ep.get(session, self._workspace(session), name), spec, self.clock.t)

    def view(self, name: str) -> EndpointView:
        with self.store.read() as session:
            return ep.endpoint_view(
                session, ep.get(session, self._workspace(session), name), "default"
            )

    def route_reason(self, name: str) -> str | None:
        with self.store.read() as session:
            table = ep.route_table(session, 1, None)
        return next(e.reason for e in table.endpoints if e.name == name)

    @staticmethod
    def _workspace(session: object) -> Workspace:
        found = session.scalars(select(Workspace).where(Workspace.name == "default")).one()  # type: ignore[attr-defined]
        assert isinstance(found, Workspace)
        return found


@pytest.fixture
def driver(store: Store, database_url: str, tmp_path: Path) -> Driver:
    return Driver(store, database_url, tmp_path)


def embeddings(**changes: object) -> EndpointSpec:
    """The README's example on a 2-CPU machine: one replica takes the whole node."""
    return EndpointSpec.model_validate(
        {
            "name": "emb",
            "command": "serve",
            "resources": {"cpus": 2, "memory": "512Mi"},
            "drain_timeout": 5,
            **changes,
        }
    )


def settle(driver: Driver, until: str, name: str = "emb", steps: int = 30) -> EndpointView:
    for _ in range(steps):
        driver.tick()
        driver.agent()
        view = driver.view(name)
        if until == view.state and all(r.revision == view.revision for r in view.replicas):
            driver.tick()  # the controller sees what the agent reported (its wake-up)
            return driver.view(name)
    raise AssertionError(f"{name} never became {until}: {driver.view(name)}")


def test_an_update_with_no_room_for_a_surge_rolls_by_replacement(driver: Driver) -> None:
    driver.deploy(embeddings())
    first = settle(driver, "ready")
    assert first.reason == "1 replica ready; idle"

    driver.update("emb", embeddings(env={"MODEL": "v2"}))
    seen: list[str] = []
    for _ in range(40):
        driver.tick()
        driver.agent()
        view = driver.view("emb")
        seen.append(view.reason or "")
        if view.state == "ready" and all(r.revision == 2 for r in view.replicas):
            driver.tick()
            view = driver.view("emb")
            break
    else:
        raise AssertionError(f"the rollout never finished; reasons: {seen}")
    assert [r.revision for r in view.replicas] == [2]
    replaced = [s for s in seen if "by replacement: no node has room for a surge" in s]
    assert replaced, seen
    assert any("stopped 1 old replica" in s and "requests are held meanwhile" in s for s in seen)
    assert view.reason == "1 replica ready; idle"


def test_no_old_replica_is_stopped_where_stopping_it_would_not_make_room(driver: Driver) -> None:
    # 2 CPUs: `small` takes 1, `emb` the other. Revision 2 of `emb` wants both: stopping
    # emb's old replica frees 1 CPU, not 2, so it keeps serving and the reason says why.
    driver.deploy(embeddings(name="small", resources={"cpus": 1, "memory": "64Mi"}))
    driver.deploy(embeddings(resources={"cpus": 1, "memory": "64Mi"}))
    settle(driver, "ready")
    settle(driver, "ready", name="small")
    driver.update("emb", embeddings(resources={"cpus": 2, "memory": "64Mi"}))
    for _ in range(5):
        driver.tick()
        driver.agent()
    view = driver.view("emb")
    old = [r for r in view.replicas if r.revision == 1]
    assert [r.state for r in old] == ["ready"]
    assert view.reason is not None
    assert "the new replicas wait for room that stopping an old one would not free" in view.reason
    assert "no node has room now" in view.reason


def test_a_new_replica_without_room_says_so_in_the_view_and_the_route(driver: Driver) -> None:
    driver.deploy(embeddings())
    settle(driver, "ready")
    # A second endpoint that cannot fit next to the first: its replica waits for room.
    driver.deploy(embeddings(name="other"))
    for _ in range(3):
        driver.tick()
    view = driver.view("other")
    (replica,) = view.replicas
    assert replica.reason is not None and "no node has room now" in replica.reason
    assert view.reason == f"1 replica waiting for a node: {replica.reason}"
    assert driver.route_reason("other") == "no node has room for a replica now"
    assert driver.route_reason("emb") is None  # it serves: nothing to explain


def test_a_replica_failing_readiness_is_reported_in_the_probes_words(driver: Driver) -> None:
    driver.deploy(embeddings())
    driver.tick()
    with driver.store.transaction() as session:
        (replica,) = session.scalars(select(Replica)).all()
        report = wire.ReplicaReport(replica_id=replica.id, phase="running", ready=False)
        nodes.replica_report(session, driver.node, report, driver.clock.t)
        # The agent's probe words, as the agent stores them on the replica.
        replica.reason = "GET /health answered 404 for 40 s"
    driver.tick()
    view = driver.view("emb")
    assert view.reason == "1 replica starting: GET /health answered 404 for 40 s"
    assert view.replicas[0].reason == "GET /health answered 404 for 40 s"
    assert view.autoscaler is not None  # the autoscaler's words have a field of their own
    assert driver.route_reason("emb") == "replica not ready: its readiness check answered 404"
    with driver.store.read() as session:
        assert session.scalars(select(Job)).one().state == "running"
        assert session.scalars(select(Endpoint)).one().reason == view.reason
