"""Where an attempt resumed from, through the store: a checkpoint the server heard of only
from a survivor, and that the next attempt's first report names, is where it started."""

from __future__ import annotations

from corral.core.placement import place
from corral.server.services import jobs, nodes
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from corral.wire.api import JobView
from support.store import check_liveness, register_node


def schedule(store: Store, now: float) -> None:
    with store.read() as session:
        loaded = SnapshotLoader().load(session, now)
    plan = place(loaded.snapshot, now)
    with store.transaction() as session:
        apply_plan(session, plan, loaded, now)


def view(store: Store, now: float) -> tuple[JobView, list[Replica]]:
    with store.read() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        job = jobs.get_job(session, ws, "t")
        return jobs.job_view(session, job, ws.name, now=now), jobs.current_replicas(session, job)


def report(store: Store, replica: Replica, now: float, **fields: object) -> None:
    with store.transaction() as session:
        nodes.replica_report(
            session,
            replica.node_id,
            wire.ReplicaReport(replica_id=replica.id, **fields),  # type: ignore[arg-type]
            now,
        )


def test_a_checkpoint_the_server_never_heard_of_is_where_the_next_attempt_starts(
    store: Store,
) -> None:
    ids = {register_node(store, name, gpus=1): name for name in ("a", "b", "c")}
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        spec = {"name": "t", "command": "x", "replicas": 2, "resources": {"gpus": "H100:1"}}
        jobs.submit_job(session, ws, parse_job_spec(spec), 3.0)
    schedule(store, 4.0)
    _, (r0, r1) = view(store, 4.0)
    for r in (r0, r1):
        report(store, r, 5.0, phase="running", pid=10, step=9)
    # Rank 0 saved checkpoint 10 and died before its next report reached the server; the
    # survivor's exit report says it got to step 13, and that 10 is saved.
    report(store, r1, 7.0, phase="exited", exit_code=1, step=13, checkpoint_step=10)
    with store.transaction() as session:
        for node_id in ids:
            if node_id != r0.node_id:
                nodes.heartbeat(session, node_id, 19.0)
        check_liveness(session, 20.0, 8.0, 0.0)
    job, _ = view(store, 20.0)
    assert job.state == "pending" and job.attempts[0].end_cause == "node_lost"
    assert job.checkpoint_step is None, "rank 0 never reported a checkpoint"

    schedule(store, 21.0)
    job, (s0, s1) = view(store, 21.0)
    assert job.attempt == 2 and job.attempts[1].start_step == 0
    (spare,) = set(ids) - {r0.node_id, r1.node_id}
    assert {s0.node_id, s1.node_id} == {r1.node_id, spare}, "not on the lost node"
    # The script found step 10 on disk and resumed from it; the agent's first look at its
    # progress came a step later (it reads it once a second).
    report(store, s0, 25.0, phase="running", pid=11, step=11, checkpoint_step=10)
    # A first report naming a checkpoint no earlier attempt had is one this attempt saved
    # itself: not where it resumed.
    report(store, s1, 25.0, phase="running", pid=12, step=20, checkpoint_step=20)
    job, _ = view(store, 25.0)
    two = job.attempts[1]
    assert two.start_step == 10
    report(store, s0, 26.0, phase="running", step=12)
    job, _ = view(store, 26.0)
    assert job.attempts[1].start_step == 10 and job.attempts[1].step == 20
