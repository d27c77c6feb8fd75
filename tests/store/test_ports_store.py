"""Ports in the store, on both databases: a node's reported ports in the scheduler's snapshot
(kept and fresh alike) and out of the ports it hands out; the rank that listens told its
port; a port found taken ends the attempt as the infrastructure's failure, not the
script's; an unready replica's reason is its probe's words."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from corral.core.placement import FIRST_MASTER_PORT
from corral.core.scheduler import Scheduler
from corral.server.services import jobs, nodes
from corral.server.services.assignments import build_assignments
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Attempt, Job, Node, Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from support.store import register_node


def submit(store: Store, now: float, **spec: Any) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        jobs.submit_job(session, ws, parse_job_spec({"command": "true", **spec}), now)


class Rounds:
    """A kept loader (the controller's) checked against a fresh one every round."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loader = SnapshotLoader()
        self.scheduler = Scheduler()

    def used_ports(self, node_id: str, now: float) -> frozenset[int]:
        with self.store.read() as session:
            kept = self.loader.load(session, now)
        with self.store.read() as session:
            fresh = SnapshotLoader().load(session, now)
        assert kept.snapshot.nodes == fresh.snapshot.nodes
        return next(n.used_ports for n in kept.snapshot.nodes if n.id == node_id)

    def schedule(self, now: float) -> None:
        with self.store.read() as session:
            loaded = self.loader.load(session, now)
        plan = self.scheduler.place(loaded.snapshot, now)
        with self.store.transaction() as session:
            apply_plan(session, plan, loaded, now)


def report_ports(store: Store, node_id: str, ports: list[int]) -> None:
    with store.transaction() as session:
        nodes.record_ports(session, node_id, wire.Ports(ports=ports))


def node_version(store: Store, node_id: str) -> int:
    with store.read() as session:
        node = session.get(Node, node_id)
        assert node is not None
        return node.version


def job(store: Store, name: str) -> Job:
    with store.read() as session:
        row = session.scalars(select(Job).where(Job.name == name)).one()
        session.expunge(row)
        return row


def replicas(store: Store, name: str) -> list[Replica]:
    with store.read() as session:
        found = list(
            session.scalars(
                select(Replica)
                .join(Job, Replica.job_id == Job.id)
                .where(Job.name == name)
                .order_by(Replica.attempt, Replica.rank)
            )
        )
        for r in found:
            session.expunge(r)
        return found


def report(store: Store, replica: Replica, now: float, **fields: Any) -> None:
    with store.transaction() as session:
        message = wire.ReplicaReport(replica_id=replica.id, **fields)
        nodes.replica_report(session, replica.node_id, message, now)


def test_reported_ports_are_in_the_snapshot_and_never_handed_out(store: Store) -> None:
    a = register_node(store, "a", cpus=16)
    rounds = Rounds(store)
    assert rounds.used_ports(a, 3.0) == frozenset()
    held = [22, FIRST_MASTER_PORT, FIRST_MASTER_PORT + 1]
    report_ports(store, a, held)
    assert rounds.used_ports(a, 3.5) == frozenset(held)
    version = node_version(store, a)
    report_ports(store, a, held)  # the agent's periodic repeat: no write
    assert node_version(store, a) == version

    submit(store, 4.0, name="ddp", replicas=1)
    rounds.schedule(4.0)
    placed = job(store, "ddp")
    assert (placed.state, placed.master_port) == ("starting", FIRST_MASTER_PORT + 2)
    # The host's ports and corral's own, together.
    assert rounds.used_ports(a, 4.5) == frozenset({*held, FIRST_MASTER_PORT + 2})
    report_ports(store, a, [22])
    assert rounds.used_ports(a, 5.0) == frozenset({22, FIRST_MASTER_PORT + 2})


def test_the_hello_carries_the_ports_and_an_older_agent_leaves_them_alone(store: Store) -> None:
    a = register_node(store, "a")
    inventory = wire.Inventory(hostname="a", cpus=4, memory_mb=16000, disk_mb=100000)
    with store.transaction() as session:
        nodes.connect(session, a, wire.Hello(inventory=inventory, address="a", ports=[8000]), 3.0)
    with store.transaction() as session:
        nodes.connect(session, a, wire.Hello(inventory=inventory, address="a"), 4.0)
        node = session.get(Node, a)
        assert node is not None and node.ports == [8000]


def test_only_the_rank_that_listens_is_told_its_port(store: Store) -> None:
    a = register_node(store, "a", cpus=16)
    submit(store, 3.0, name="gang", replicas=2, resources={"cpus": 1})
    Rounds(store).schedule(3.0)
    with store.read() as session:
        sent = sorted(build_assignments(session, a), key=lambda x: x.rank)
    port = job(store, "gang").master_port
    assert [(x.rank, x.port) for x in sent] == [(0, port), (1, None)]
    assert all(x.env["MASTER_PORT"] == str(port) for x in sent)


def test_a_port_found_taken_is_the_infrastructures_failure_and_the_next_port_is_free(
    store: Store,
) -> None:
    a = register_node(store, "a", cpus=16)
    rounds = Rounds(store)
    submit(store, 3.0, name="ddp", replicas=2, max_restarts=0, resources={"cpus": 1})
    rounds.schedule(3.0)
    first = job(store, "ddp").master_port
    rank0, rank1 = replicas(store, "ddp")
    report(store, rank0, 3.5, phase="running")
    report(store, rank1, 3.5, phase="running")
    # The agent found another process on rank 0's port: the ports first, then the exit.
    report_ports(store, a, [first])  # type: ignore[list-item]
    why = f"port {first}, which corral gave it, is held by another process on this node"
    report(store, rank0, 4.0, phase="exited", exit_code=None, error=why, port_conflict=first)
    report(store, rank1, 4.1, phase="exited", exit_code=1)  # it could not reach rank 0

    ended = job(store, "ddp")
    assert (ended.state, ended.restarts) == ("pending", 0), "not charged to max_restarts: 0"
    assert ended.reason is not None and "not charged to max_restarts" in ended.reason
    assert "found its port held by another process" in ended.reason
    with store.read() as session:
        attempt = session.get(Attempt, (ended.id, 1))
        assert attempt is not None and attempt.end_cause == "port_in_use"
    old0 = replicas(store, "ddp")[0]
    assert (old0.infra_cause, old0.reason) == ("port_in_use", why)

    rounds.schedule(5.0)
    again = job(store, "ddp")
    assert (again.state, again.attempt) == ("starting", 2)
    assert again.master_port not in (None, first)


def test_the_same_exit_without_a_port_conflict_is_the_scripts(store: Store) -> None:
    a = register_node(store, "a", cpus=16)
    submit(store, 3.0, name="solo", replicas=1, max_restarts=0, resources={"cpus": 1})
    Rounds(store).schedule(3.0)
    [replica] = replicas(store, "solo")
    report(store, replica, 3.5, phase="running")
    with store.transaction() as session:
        nodes.heartbeat(session, a, 4.0)  # heard since: nothing else to blame
    report(store, replica, 4.0, phase="exited", exit_code=1)
    failed = job(store, "solo")
    assert failed.state == "failed" and replicas(store, "solo")[0].infra_cause is None


def test_an_unready_replica_shows_its_probes_words_until_it_is_ready(store: Store) -> None:
    register_node(store, "a", cpus=16)
    submit(store, 3.0, name="web", replicas=1, resources={"cpus": 1})
    Rounds(store).schedule(3.0)
    [replica] = replicas(store, "web")
    report(
        store,
        replica,
        3.5,
        phase="running",
        ready=False,
        unready_reason="GET / answered 404 for 1 s",
    )
    assert replicas(store, "web")[0].reason == "GET / answered 404 for 1 s"
    report(
        store,
        replica,
        13.5,
        phase="running",
        ready=False,
        unready_reason="GET / answered 404 for 11 s",
    )
    assert replicas(store, "web")[0].reason == "GET / answered 404 for 11 s"
    report(store, replica, 14.0, phase="running", ready=True)
    now = replicas(store, "web")[0]
    assert (now.ready, now.reason) == (True, None)


def test_an_exit_replaces_the_last_probe_words_with_the_exit(store: Store) -> None:
    a = register_node(store, "a", cpus=16)
    submit(store, 3.0, name="web", replicas=1, max_restarts=0, resources={"cpus": 1})
    Rounds(store).schedule(3.0)
    [replica] = replicas(store, "web")
    report(
        store,
        replica,
        3.5,
        phase="running",
        ready=False,
        unready_reason="GET / answered 503 for 1 s",
    )
    with store.transaction() as session:
        nodes.heartbeat(session, a, 4.0)
    report(store, replica, 4.0, phase="exited", exit_code=3)
    assert replicas(store, "web")[0].reason is None
    failed = job(store, "web")
    assert failed.state == "failed" and failed.reason is not None
    assert "replica 0 exited with code 3 (an error in the script)" in failed.reason
    assert "answered 503" not in failed.reason
