"""The plan applier re-checks the nodes it places on: a node lost (or disconnected)
between the snapshot and the commit voids the whole plan, nothing of it is written, and the
next round, with the same kept loader and scheduler the controller keeps, plans without it.
On both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from corral.core.placement import PlacementPlan
from corral.core.scheduler import Scheduler
from corral.core.states import JobState, NodeCondition
from corral.server.services import jobs
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import Loaded, SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Attempt, Job, Node, Replica
from corral.spec import parse_job_spec
from support.store import register_node


class Rounds:
    """The scheduler controller's way: one loader and one Scheduler kept across rounds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loader = SnapshotLoader()
        self.scheduler = Scheduler()

    def plan(self, now: float) -> tuple[PlacementPlan, Loaded]:
        with self.store.read() as session:
            loaded = self.loader.load(session, now)
        return self.scheduler.place(loaded.snapshot, now), loaded

    def apply(self, plan: PlacementPlan, loaded: Loaded, now: float) -> None:
        with self.store.transaction() as session:
            apply_plan(session, plan, loaded, now)


def _submit(store: Store, name: str, gpus: int = 1) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        spec = parse_job_spec(
            {"name": name, "command": "true", "resources": {"gpus": f"H100:{gpus}"}}
        )
        jobs.submit_job(session, ws, spec, 3.0)


def _placed_on(plan: PlacementPlan) -> set[str]:
    return {r.node_id for g in plan.placements for r in g.replicas}


def _job(store: Store, name: str) -> Job:
    with store.read() as session:
        job = session.scalars(select(Job).where(Job.name == name)).one()
        session.expunge(job)
        return job


def _count(store: Store, table: type) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def _lose(store: Store, node_id: str, *, condition: NodeCondition = NodeCondition.LOST) -> None:
    """What liveness does to a silent node (or the channel to a closed one)."""
    with store.transaction() as session:
        node = session.get(Node, node_id)
        assert node is not None
        node.connected = False
        node.condition = condition


def _nodes_of(store: Store, name: str) -> set[str]:
    with store.read() as session:
        job = session.scalars(select(Job).where(Job.name == name)).one()
        return set(
            session.scalars(
                select(Replica.node_id).where(
                    Replica.job_id == job.id, Replica.attempt == job.attempt
                )
            )
        )


@pytest.mark.parametrize("how", [NodeCondition.LOST, NodeCondition.READY])
def test_a_node_gone_after_the_snapshot_gets_no_placement(store: Store, how: str) -> None:
    """LOST: liveness declared it lost. READY: still ready, but its agent disconnected."""
    register_node(store, "a", gpus=1)
    register_node(store, "b", gpus=1)
    _submit(store, "early")
    _submit(store, "late")
    rounds = Rounds(store)
    plan, loaded = rounds.plan(10.0)
    assert len(plan.placements) == 2
    doomed = sorted(_placed_on(plan))[0]
    _lose(store, doomed, condition=NodeCondition(how))

    with pytest.raises(StaleDataError, match="no longer ready and connected"):
        rounds.apply(plan, loaded, 10.0)
    # Nothing half-applied: not even the placement on the node that is still fine.
    assert _count(store, Replica) == 0 and _count(store, Attempt) == 0
    assert {_job(store, n).state for n in ("early", "late")} == {JobState.PENDING}

    plan, loaded = rounds.plan(11.0)
    assert doomed not in _placed_on(plan) and len(plan.placements) == 1
    rounds.apply(plan, loaded, 11.0)
    states = sorted(_job(store, n).state for n in ("early", "late"))
    assert states == [JobState.PENDING, JobState.STARTING]
    assert doomed not in _nodes_of(store, "early") | _nodes_of(store, "late")
    waiting = next(_job(store, n) for n in ("early", "late") if _job(store, n).state == "pending")
    assert waiting.reason, "the job left waiting says why"


def test_a_node_that_stayed_ready_takes_the_plan(store: Store) -> None:
    """The guard is no obstacle to the common case, nor to a node merely heard from (a
    heartbeat is no state change)."""
    a = register_node(store, "a", gpus=1)
    _submit(store, "job")
    rounds = Rounds(store)
    plan, loaded = rounds.plan(10.0)
    with store.transaction() as session:
        node = session.get(Node, a)
        assert node is not None
        node.last_heartbeat_at = 9.5
    rounds.apply(plan, loaded, 10.0)
    assert _job(store, "job").state == JobState.STARTING
    assert _nodes_of(store, "job") == {a}
