"""The job state machine, rule by rule."""

from __future__ import annotations

import pytest

from corral.core.lifecycle import JobFacts, ReplicaFacts, decide_job, replica_outcome


def facts(state: str = "running", restarts: int = 0, max_restarts: int = 0) -> JobFacts:
    return JobFacts(state=state, attempt=1, restarts=restarts, max_restarts=max_restarts)


@pytest.mark.parametrize(
    ("desired", "code", "outcome"),
    [
        ("run", 0, "succeeded"),
        ("run", 1, "failed"),
        ("run", None, "failed"),
        ("stop", 143, "stopped"),
        ("stop", 0, "stopped"),
    ],
)
def test_replica_outcome(desired: str, code: int | None, outcome: str) -> None:
    assert replica_outcome(desired, code) == outcome


def test_all_running_starts_the_job() -> None:
    d = decide_job(facts("starting"), [ReplicaFacts(0, "running"), ReplicaFacts(1, "running")])
    assert d.state == "running" and d.mark_started


def test_a_gang_is_not_running_until_every_replica_is() -> None:
    d = decide_job(facts("starting"), [ReplicaFacts(0, "running"), ReplicaFacts(1, "assigned")])
    assert d.state == "starting"


def test_all_succeeded_succeeds() -> None:
    d = decide_job(facts(), [ReplicaFacts(0, "succeeded"), ReplicaFacts(1, "succeeded")])
    assert (d.state, d.exit_code, d.mark_finished) == ("succeeded", 0, True)


def test_a_failed_replica_fails_the_job_and_stops_the_rest() -> None:
    d = decide_job(facts(), [ReplicaFacts(0, "running"), ReplicaFacts(1, "failed", 3)])
    assert (d.state, d.exit_code, d.stop_replicas) == ("failed", 3, True)
    assert "replica 1 exited with code 3" in (d.reason or "")


def test_a_failure_within_the_restart_budget_queues_again() -> None:
    d = decide_job(facts(restarts=0, max_restarts=2), [ReplicaFacts(0, "failed", 1)])
    assert (d.state, d.count_restart, d.stop_replicas) == ("pending", True, True)
    spent = decide_job(facts(restarts=2, max_restarts=2), [ReplicaFacts(0, "failed", 1)])
    assert spent.state == "failed"


def test_a_lost_node_requeues_without_spending_a_restart() -> None:
    d = decide_job(facts(), [ReplicaFacts(0, "lost", node="n1"), ReplicaFacts(1, "running")])
    assert (d.state, d.count_restart, d.stop_replicas) == ("pending", False, True)
    assert "n1" in (d.reason or "")


def test_cancelling_ends_when_every_replica_has_stopped() -> None:
    waiting = decide_job(facts("cancelling"), [ReplicaFacts(0, "running")])
    assert waiting.state == "cancelling"
    done = decide_job(facts("cancelling"), [ReplicaFacts(0, "stopped")])
    assert done.state == "cancelled" and done.mark_finished


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled", "pending"])
def test_settled_and_pending_jobs_do_not_move(state: str) -> None:
    assert decide_job(facts(state), [ReplicaFacts(0, "failed", 1)]).state == state
