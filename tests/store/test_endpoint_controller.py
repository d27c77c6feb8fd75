"""The endpoint controller as a runner.Controller against the real store: the autoscaler's
state is stored and a new controller carries on from it; a plan decided on facts that
changed is not written; a broken endpoint is quarantined while the others are served;
the gateways' load is not lost to a plan that went stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from test_endpoint_rollout import Driver, embeddings, settle

from corral.server.controllers import endpoints as controller
from corral.server.controllers import runner
from corral.server.services import endpoint_reconcile
from corral.server.services import endpoints as ep
from corral.server.store.db import Store
from corral.server.store.tables import Endpoint, Job
from corral.wire.gateway import EndpointLoad, GatewayLoad


@pytest.fixture
def driver(store: Store, database_url: str, tmp_path: Path) -> Driver:
    return Driver(store, database_url, tmp_path)


def report(driver: Driver, in_flight: float, arrivals: int = 0, name: str = "emb") -> None:
    """One gateway's load report, as its POST /gateway/load would store it."""
    load = EndpointLoad(
        name=name,
        workspace="default",
        in_flight=int(in_flight),
        held=0,
        arrivals=arrivals,
        completed=0,
        rejected=0,
        mean_in_flight=in_flight,
        window_s=1.0,
    )
    driver.cp.loads.report(
        GatewayLoad(gateway="gw", route_version=1, endpoints=[load]), driver.clock.t
    )


def stored(driver: Driver, name: str = "emb") -> Endpoint:
    with driver.store.read() as session:
        found = session.scalars(select(Endpoint).where(Endpoint.name == name)).one()
        session.expunge(found)
        return found


def scaler() -> dict[str, object]:
    return {"min_replicas": 1, "max_replicas": 4, "target_in_flight": 1, "resources": {}}


def test_the_autoscaler_state_is_stored_and_a_new_controller_carries_on(driver: Driver) -> None:
    driver.deploy(embeddings(**scaler()))
    settle(driver, "ready")
    for _ in range(3):
        report(driver, 3.0, arrivals=10)
        driver.tick()
        driver.agent()
    endpoint = stored(driver)
    assert endpoint.desired_replicas == 3
    state = endpoint_reconcile.autoscale_state(endpoint.autoscale)
    assert state is not None and state.desired == 3 and state.samples
    assert state.samples[-1].in_flight == 3.0

    # The server restarts: a new controller, no memory of its own; the load is gone.
    driver.endpoints = controller.EndpointController()
    report(driver, 0.0)
    driver.tick()
    after = stored(driver)
    assert after.desired_replicas == 3  # still in the panic it started: no scaling down
    assert ep.notes(after)["autoscaler"].endswith("not scaling down")
    restored = endpoint_reconcile.autoscale_state(after.autoscale)
    assert restored is not None
    assert (restored.panic_until, restored.last_scale_up_at) == (
        state.panic_until,
        state.last_scale_up_at,
    )
    assert restored.samples[: len(state.samples)] == state.samples

    # Without the stored state (as before it was stored) the new one would have forgotten.
    with driver.store.transaction() as session:
        row = session.scalars(select(Endpoint)).one()
        row.autoscale = {k: v for k, v in row.autoscale.items() if k != "state"}
    driver.endpoints = controller.EndpointController()
    report(driver, 0.0)
    driver.tick()
    assert stored(driver).desired_replicas == 1


def test_a_plan_decided_on_facts_that_changed_is_not_written(driver: Driver) -> None:
    driver.deploy(embeddings())
    endpoints = controller.EndpointController()
    now = driver.clock.t
    with driver.store.read() as session:
        (key,) = endpoints.keys(session, now)
        loaded = endpoints.load(session, key, now)
    assert loaded is not None
    plan = endpoints.decide(loaded, now)
    assert plan.plan.actions  # it would start a replica
    driver.update("emb", embeddings(env={"MODEL": "v2"}))  # a user's update meanwhile
    with pytest.raises(runner.Stale), driver.store.transaction() as session:
        endpoints.apply(session, key, plan, now)
    with driver.store.read() as session:
        assert session.scalars(select(Job)).all() == []

    # A replica job that changed under the plan makes it stale too.
    driver.tick()
    with driver.store.read() as session:
        loaded = endpoints.load(session, key, driver.clock.t)
    assert loaded is not None
    plan = endpoints.decide(loaded, driver.clock.t)
    with driver.store.transaction() as session:
        session.scalars(select(Job)).one().reason = "placed meanwhile"
    with pytest.raises(runner.Stale), driver.store.transaction() as session:
        endpoints.apply(session, key, plan, driver.clock.t)


def test_an_endpoint_that_does_not_read_is_quarantined_and_the_others_carry_on(
    driver: Driver,
) -> None:
    driver.deploy(embeddings(name="poisoned", resources={"cpus": 0.5, "memory": "64Mi"}))
    driver.deploy(embeddings(name="healthy", resources={"cpus": 0.5, "memory": "64Mi"}))
    with driver.store.transaction() as session:
        bad = session.scalars(select(Endpoint).where(Endpoint.name == "poisoned")).one()
        bad.spec = {**bad.spec, "command": None}
    rounds = runner.Runner(controller.EndpointController())
    done = rounds.round(driver.cp)
    assert [stored(driver, "poisoned").id] == done.failed
    reason = stored(driver, "poisoned").reason or ""
    assert reason.startswith("corral could not reconcile this (ValidationError")
    assert reason.endswith("retrying in 1 s")
    with driver.store.read() as session:
        jobs = session.scalars(select(Job)).all()
    assert [j.endpoint_id for j in jobs] == [stored(driver, "healthy").id]
    # Backed off: not tried again within the delay, then tried (and failing) again.
    assert rounds.round(driver.cp).failed == []
    driver.clock.t += 1.0
    assert rounds.round(driver.cp).failed == [stored(driver, "poisoned").id]
    assert (stored(driver, "poisoned").reason or "").endswith("retrying in 2 s")


def test_the_gateways_load_is_kept_for_the_plan_that_is_written(driver: Driver) -> None:
    driver.deploy(embeddings(**scaler()))
    settle(driver, "ready")
    endpoints = driver.endpoints
    report(driver, 2.0, arrivals=5)
    endpoints.prepare(driver.cp)
    report(driver, 2.0, arrivals=12)  # the counter: 7 more since
    endpoints.prepare(driver.cp)  # (a stale round in between used none of it)
    (load,) = endpoints.traffic.values()
    assert (load.arrivals, load.in_flight, load.known) == (7, 2.0, True)
    driver.tick()
    assert endpoints.traffic == {}  # used by the plan that was written
    state = endpoint_reconcile.autoscale_state(stored(driver).autoscale)
    assert state is not None and state.samples[-1].arrivals == 7


def test_the_autoscalers_memory_alone_moves_no_version(driver: Driver) -> None:
    """Its load window moves every tick under traffic: a user's update read before a tick
    must still apply after it (no new version), while the memory is stored."""
    driver.deploy(embeddings(**scaler()))
    settle(driver, "ready")
    report(driver, 0.5, arrivals=1)
    driver.tick()
    before = stored(driver)
    report(driver, 0.5, arrivals=1)  # the same load: the same decision, a longer window
    driver.tick()
    after = stored(driver)
    assert after.desired_replicas == before.desired_replicas
    assert after.autoscale != before.autoscale  # the new sample is kept...
    assert after.version == before.version  # ...without making a reader's version stale
    report(driver, 4.0, arrivals=20)  # a decision that changes what users see
    driver.tick()
    scaled = stored(driver)
    assert scaled.desired_replicas > before.desired_replicas
    assert scaled.version > before.version
