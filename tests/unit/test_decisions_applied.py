"""Every field of every decision core hands the server is applied: a decision nobody reads
is a bug (DESIGN.md, "Controllers").

For each decision dataclass there is a table with one row per field: a variant of a
baseline decision with that field changed, and what the store must then show differently
after the server's applier ran. The tables must name every field (`dataclasses.fields`),
so a new field fails here until someone applies it and adds its row. The few fields no
applier needs are rows too, each saying why (a reviewer weighs that). Each variant is
applied in a transaction that is rolled back, on one SQLite store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.lifecycle import JobDecision
from corral.core.liveness import LivenessPlan, LostNode, Overdue
from corral.core.placement import (
    GangPlacement,
    PlacementPlan,
    Preemption,
    ReplicaPlacement,
    Reservation,
)
from corral.core.recovery import Cause, Decision, NextAttempt, RecoveryMemory, Verdict
from corral.core.states import Desired, JobState, NodeCondition
from corral.server.services import jobs
from corral.server.services.identity import DEFAULT_WORKSPACE, bootstrap, workspace_by_name
from corral.server.services.jobs import current_replicas
from corral.server.services.liveness import apply_plan as apply_plan_liveness
from corral.server.services.recovery import apply_next_attempt
from corral.server.services.scheduling import apply_plan
from corral.server.services.settling import apply_job_decision, apply_recovery
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import Attempt, Job, Node, Replica
from corral.spec import parse_job_spec
from support.store import register_node

NOW = 100.0
Observed = dict[str, Any]


class _Undo(Exception):
    """Rolls a trial back."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'corral.db'}")
    upgrade(s.engine)
    bootstrap(s, 1.0, tmp_path, "crl_admin", "crj_join")
    register_node(s, "a", gpus=2)
    register_node(s, "b", gpus=2)
    yield s
    s.close()


def _submit(store: Store, name: str, **spec: Any) -> str:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        body = {"name": name, "command": "true", "resources": {"gpus": "H100:1"}, **spec}
        return jobs.submit_job(session, ws, parse_job_spec(body), 3.0).id


def _node_id(store: Store, name: str) -> str:
    with store.read() as session:
        return session.scalars(select(Node.id).where(Node.name == name)).one()


def _place(store: Store, job_id: str, *on: tuple[str, int]) -> None:
    """Place the job's gang as given (node name, GPU index per rank), through the applier."""
    with store.read() as session:
        loaded = SnapshotLoader().load(session, 4.0)
    gang = GangPlacement(
        job_id,
        tuple(
            ReplicaPlacement(rank, _node_id(store, node), (gpu,))
            for rank, (node, gpu) in enumerate(on)
        ),
        master_port=29500,
    )
    with store.transaction() as session:
        apply_plan(session, PlacementPlan((gang,)), loaded, 4.0)


def _observe(session: Session) -> Observed:
    """What a user or an agent can see of the store, as plain values."""
    session.flush()
    session.expire_all()  # the plan applier writes with Core statements too
    seen: Observed = {}
    names: dict[str, str] = {i: n for i, n in session.execute(select(Node.id, Node.name))}
    for node in session.scalars(select(Node)):
        seen[f"node {node.name}"] = node.condition
    cols = (
        *("state", "reason", "exit_code", "restarts", "next_replicas", "recheck_at"),
        *("recovery", "started_at", "finished_at", "attempt", "master_port", "borrowed"),
        "preemptions",
    )
    for job in session.scalars(select(Job)):
        for col in cols:
            seen[f"{job.name}.{col}"] = getattr(job, col)
        for r in session.scalars(select(Replica).where(Replica.job_id == job.id)):
            where = (names[r.node_id], tuple(r.gpus))
            seen[f"{job.name}#{r.attempt}.{r.rank}"] = (r.state, r.desired, r.reason, where)
        for a in session.scalars(select(Attempt).where(Attempt.job_id == job.id)):
            seen[f"{job.name}@{a.attempt}"] = (a.ended_at, a.end_cause, a.reason)
    return seen


def _trial(store: Store, apply: Callable[[Session], object]) -> Observed:
    seen: Observed = {}
    try:
        with store.transaction() as session:
            apply(session)
            seen = _observe(session)
            raise _Undo
    except _Undo:
        pass
    return seen


def _changes(before: Observed, after: Observed) -> Observed:
    return {k: after.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _assert_complete(kind: type, table: dict[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(kind)}
    missing = names - table.keys()
    assert not missing, f"{kind.__name__} fields no applier is shown to apply: {sorted(missing)}"
    assert table.keys() <= names, f"rows for fields {kind.__name__} no longer has"


# -- core.recovery.Decision -> settling.apply_recovery ---------------------------------

XID = RecoveryMemory({Cause.GPU_XID: 1}, {"b": 5000.0}, 2)

# field -> (the variant's value, what the store shows differently: key -> value)
RECOVERY: dict[str, tuple[Any, Observed]] = {
    "verdict": (Verdict.GIVE_UP, {"job.state": JobState.FAILED, "job.finished_at": NOW}),
    "reason": (
        "attempt 1 ended: other",
        {"job.reason": "attempt 1 ended: other", "job@1": (NOW, None, "attempt 1 ended: other")},
    ),
    "cause": (Cause.GPU_XID, {"job@1": (NOW, "gpu_xid", "attempt 1 ended: base")}),
    "stop_replicas": (
        True,
        {
            "job#1.0": ("running", Desired.STOP, None, ("a", (0,))),
            "job#1.1": ("running", Desired.STOP, None, ("b", (0,))),
        },
    ),
    "replicas": (1, {"job.next_replicas": 1}),
    "memory": (XID, {"job.recovery": XID.to_json()}),
    "cordon": (frozenset({"a"}), {"node a": NodeCondition.CORDONED}),
    "recheck_at": (777.0, {"job.recheck_at": 777.0}),
}


def test_every_recovery_decision_field_is_applied(store: Store) -> None:
    _assert_complete(Decision, RECOVERY)
    job_id = _submit(store, "job", replicas=2, min_replicas=1)
    _place(store, job_id, ("a", 0), ("b", 0))
    with store.transaction() as session:
        for r in session.scalars(select(Replica)):
            r.state = "running"
    base = Decision(Verdict.RESTART, "attempt 1 ended: base")

    def applying(decision: Decision) -> Callable[[Session], object]:
        def apply(session: Session) -> object:
            job = session.get(Job, job_id)
            assert job is not None
            return apply_recovery(session, job, current_replicas(session, job), decision, NOW)

        return apply

    before = _trial(store, applying(base))
    assert before["job.state"] == JobState.PENDING  # the baseline does something too
    for name, (value, expected) in RECOVERY.items():
        after = _trial(store, applying(dataclasses.replace(base, **{name: value})))
        assert _changes(before, after) == expected, name


# -- core.recovery.NextAttempt (a waiting elastic job) -> recovery.apply_next_attempt ------

# field -> (the variant's value, what the store shows differently), or why it is not applied.
NEXT: dict[str, tuple[Any, Observed] | str] = {
    "verdict": "RESTART or WAIT: the job is pending either way, placed when it fits",
    "replicas": (1, {"job.next_replicas": 1}),
    "reason": ("shrinking", {"job.reason": "shrinking"}),
    "recheck_at": (900.0, {"job.recheck_at": 900.0}),
}


def test_every_next_attempt_field_is_applied(store: Store) -> None:
    _assert_complete(NextAttempt, NEXT)
    job_id = _submit(store, "job", replicas=2, min_replicas=1)
    base = NextAttempt(Verdict.WAIT, 2, "waiting for a replacement")

    def applying(nxt: NextAttempt) -> Callable[[Session], object]:
        def apply(session: Session) -> object:
            job = session.get(Job, job_id)
            assert job is not None
            return apply_next_attempt(job, nxt)

        return apply

    before = _trial(store, applying(base))
    assert before["job.reason"] == "waiting for a replacement"
    for name, row in NEXT.items():
        if isinstance(row, str):
            continue
        value, expected = row
        after = _trial(store, applying(dataclasses.replace(base, **{name: value})))
        assert _changes(before, after) == expected, name


# -- core.lifecycle.JobDecision -> settling.apply_job_decision --------------------------

JOB: dict[str, tuple[Any, Observed]] = {
    "state": (JobState.FAILED, {"job.state": JobState.FAILED}),
    "exit_code": (3, {"job.exit_code": 3}),
    "reason": ("why", {"job.reason": "why"}),
    "stop_replicas": (True, {"job#1.0": ("assigned", Desired.STOP, None, ("a", (0,)))}),
    "count_restart": (True, {"job.restarts": 1}),
    "mark_started": (True, {"job.started_at": NOW}),
    "mark_finished": (
        True,
        {"job.finished_at": NOW, "job@1": (NOW, None, None), "job.recheck_at": None},
    ),
}


def test_every_job_decision_field_is_applied(store: Store) -> None:
    _assert_complete(JobDecision, JOB)
    job_id = _submit(store, "job")
    _place(store, job_id, ("a", 0))
    with store.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.recheck_at = 500.0  # so that finishing is seen to clear it
    base = JobDecision(JobState.RUNNING)

    def applying(decision: JobDecision) -> Callable[[Session], object]:
        def apply(session: Session) -> object:
            job = session.get(Job, job_id)
            assert job is not None
            return apply_job_decision(session, job, current_replicas(session, job), decision, NOW)

        return apply

    before = _trial(store, applying(base))
    assert before["job.state"] == JobState.RUNNING
    for name, (value, expected) in JOB.items():
        after = _trial(store, applying(dataclasses.replace(base, **{name: value})))
        assert _changes(before, after) == expected, name


# -- the scheduler's PlacementPlan and its actions -> scheduling.apply_plan -------------

# Fields the applier has no use for, and why. Adding a row here is a design decision:
# say it in review.
NOT_APPLIED: dict[tuple[type, str], str] = {
    (PlacementPlan, "never_fits"): (
        "a subset of pending_reasons (whose reasons are written); it tells the core's "
        "queue and explain what to do next, the store keeps no outcome"
    ),
    (PlacementPlan, "reservations"): (
        "EASY backfill's expected start of the blocked head: decided afresh each round "
        "from the running jobs' max_runtime, so there is nothing to keep"
    ),
    (Reservation, "job_id"): "reservations are not applied (above)",
    (Reservation, "start_at"): "reservations are not applied (above)",
    (Reservation, "node_ids"): "reservations are not applied (above)",
}


def test_every_placement_plan_field_is_applied(store: Store) -> None:
    low = _submit(store, "low", preemptible=True)
    _place(store, low, ("a", 0))
    p = _submit(store, "p", priority=10)
    q = _submit(store, "q")
    a, b = _node_id(store, "a"), _node_id(store, "b")
    with store.read() as session:
        loaded = SnapshotLoader().load(session, 5.0)

    replica = ReplicaPlacement(0, b, (1,))
    gang = GangPlacement(p, (replica,), master_port=29600)
    preemption = Preemption(low, p, f"preempted for {p}")
    base = PlacementPlan((gang,), pending_reasons={q: "old"}, preemptions=(preemption,))
    stop = (Desired.STOP, "preempted for job 'p'")

    def with_gang(**change: Any) -> PlacementPlan:
        return dataclasses.replace(base, placements=(dataclasses.replace(gang, **change),))

    def with_replica(**change: Any) -> PlacementPlan:
        return with_gang(replicas=(dataclasses.replace(replica, **change),))

    def with_preemption(**change: Any) -> PlacementPlan:
        return dataclasses.replace(base, preemptions=(dataclasses.replace(preemption, **change),))

    # (kind, field) -> (the variant plan, a check of what the store shows differently)
    rows: dict[tuple[type, str], tuple[PlacementPlan, Callable[[Observed], bool]]] = {
        (PlacementPlan, "placements"): (
            dataclasses.replace(base, placements=()),
            lambda d: d["p.state"] == JobState.PENDING and d["p#1.0"] is None,
        ),
        (PlacementPlan, "pending_reasons"): (
            dataclasses.replace(base, pending_reasons={q: "new"}),
            lambda d: d == {"q.reason": "new"},
        ),
        (PlacementPlan, "preemptions"): (
            dataclasses.replace(base, preemptions=()),
            lambda d: d["low.state"] == JobState.STARTING and d["low#1.0"][1] == Desired.RUN,
        ),
        (GangPlacement, "job_id"): (
            with_gang(job_id=q),
            lambda d: d["q.state"] == JobState.STARTING and d["p.state"] == JobState.PENDING,
        ),
        (GangPlacement, "replicas"): (
            with_gang(replicas=(replica, dataclasses.replace(replica, rank=1, gpus=(0,)))),
            lambda d: d == {"p#1.1": ("assigned", Desired.RUN, None, ("b", (0,)))},
        ),
        (GangPlacement, "master_port"): (
            with_gang(master_port=29601),
            lambda d: d == {"p.master_port": 29601},
        ),
        (GangPlacement, "borrowed"): (
            with_gang(borrowed=True),
            lambda d: d == {"p.borrowed": True},
        ),
        (ReplicaPlacement, "rank"): (
            with_replica(rank=3),
            lambda d: d["p#1.0"] is None and d["p#1.3"] is not None,
        ),
        (ReplicaPlacement, "node_id"): (
            with_replica(node_id=a),
            lambda d: d == {"p#1.0": ("assigned", Desired.RUN, None, ("a", (1,)))},
        ),
        (ReplicaPlacement, "gpus"): (
            with_replica(gpus=(0,)),
            lambda d: d == {"p#1.0": ("assigned", Desired.RUN, None, ("b", (0,)))},
        ),
        (Preemption, "job_id"): (
            with_preemption(job_id=q),  # not running: nothing to stop, nothing written
            lambda d: d["low.state"] == JobState.STARTING,
        ),
        (Preemption, "for_job_id"): (
            with_preemption(for_job_id=q, reason=f"preempted for {q}"),
            lambda d: d["low#1.0"][2] == "preempted for job 'q'",
        ),
        (Preemption, "reason"): (
            with_preemption(reason="taken back"),
            lambda d: d["low#1.0"][2] == "taken back" and "taken back" in d["low.reason"],
        ),
    }
    for kind in (PlacementPlan, GangPlacement, ReplicaPlacement, Preemption, Reservation):
        _assert_complete(kind, {n: 1 for k, n in rows.keys() | NOT_APPLIED.keys() if k is kind})
    assert not rows.keys() & NOT_APPLIED.keys()

    before = _trial(store, lambda s: apply_plan(s, base, loaded, NOW))
    assert before["p.state"] == JobState.STARTING and before["low.state"] == JobState.PENDING
    assert before["low#1.0"][:3] == ("assigned", *stop)
    for (kind, name), (plan, check) in rows.items():
        changed = _changes(
            before, _trial(store, lambda s, plan=plan: apply_plan(s, plan, loaded, NOW))
        )
        assert changed and check(changed), (kind.__name__, name, changed)


# -- core.liveness.LivenessPlan -> services/liveness.apply_plan ---------------------------


def test_every_liveness_plan_field_is_applied(store: Store) -> None:
    running = _submit(store, "run", max_runtime=60)
    _place(store, running, ("a", 0))
    waiting = _submit(store, "wait")
    with store.transaction() as session:
        for job in session.scalars(select(Job)):
            job.recheck_at = 50.0  # both asked to be decided again by now
    a = _node_id(store, "a")
    lost = LostNode(a, silent_s=42.0, cutoff=NOW)
    overdue = Overdue(running, max_runtime_s=60.0)
    rows: dict[tuple[type, str], tuple[LivenessPlan, Callable[[Observed], bool]]] = {
        (LivenessPlan, "lost"): (
            LivenessPlan(lost=(lost,)),
            lambda d: d["node a"] == NodeCondition.LOST and d["run#1.0"][0] == "lost",
        ),
        (LivenessPlan, "overdue"): (
            LivenessPlan(overdue=(overdue,)),
            lambda d: d["run.state"] == JobState.FAILED,
        ),
        (LivenessPlan, "recheck"): (
            LivenessPlan(recheck=(waiting,)),
            lambda d: d.get("wait.recheck_at", 1) is None,  # and decided again (replanned)
        ),
        (LostNode, "id"): (
            LivenessPlan(lost=(dataclasses.replace(lost, id=_node_id(store, "b")),)),
            lambda d: d == {"node b": NodeCondition.LOST},
        ),
        (LostNode, "silent_s"): (
            LivenessPlan(lost=(dataclasses.replace(lost, silent_s=7.0),)),
            lambda d: "no heartbeat for 7s" in d["run#1.0"][2],
        ),
        (LostNode, "cutoff"): (  # heard from since the cutoff: not lost after all
            LivenessPlan(lost=(dataclasses.replace(lost, cutoff=0.0),)),
            lambda d: d == {},
        ),
        (Overdue, "job_id"): (
            LivenessPlan(overdue=(dataclasses.replace(overdue, job_id=waiting),)),
            lambda d: d == {},  # not running: nothing to stop
        ),
        (Overdue, "max_runtime_s"): (
            LivenessPlan(overdue=(dataclasses.replace(overdue, max_runtime_s=9.0),)),
            lambda d: "max_runtime of 9s" in d["run.reason"],
        ),
    }
    for kind in (LivenessPlan, LostNode, Overdue):
        _assert_complete(kind, {n: 1 for k, n in rows if k is kind})
    with store.transaction() as session:
        for node in session.scalars(select(Node)):
            node.last_heartbeat_at = 10.0  # silent since 10; "cutoff=0" means heard since
    before = _trial(store, lambda s: apply_plan_liveness(s, LivenessPlan(), {}, NOW))
    for (kind, name), (plan, check) in rows.items():
        after = _trial(store, lambda s, plan=plan: apply_plan_liveness(s, plan, {}, NOW))
        changed = _changes(before, after)
        assert check(changed), (kind.__name__, name, changed)
