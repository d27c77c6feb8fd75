"""core/endpoints.reconcile, rule by rule: what it starts, replaces, drains and stops, and
why; the autoscaler's state it hands back, and that state's stored form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from corral.core import autoscale
from corral.core.endpoints import (
    DRAIN_QUIET_S,
    Drain,
    EndpointFacts,
    EndpointPlan,
    EndpointPolicy,
    Failure,
    Replace,
    ReplicaFacts,
    Start,
    Stop,
    Traffic,
    reconcile,
)
from corral.core.scheduler import reasons
from corral.core.states import JobState, ReplicaState

NOW = 1000.0
POLICY = EndpointPolicy(
    min_replicas=1,
    max_replicas=4,
    target_in_flight=4.0,
    idle_to_zero_s=300.0,
    readiness_timeout_s=60.0,
    drain_timeout_s=30.0,
)
NO_ROOM = reasons.NO_ROOM_CPU.format(replicas=1, demand="2 CPUs", level="node")


def ready(job: str, revision: int = 1, at: float = 10.0, **kw: object) -> ReplicaFacts:
    values: dict[str, object] = {
        "job_id": job,
        "revision": revision,
        "job_state": JobState.RUNNING,
        "submitted_at": at,
        "replica_id": f"r-{job}",
        "replica_state": ReplicaState.RUNNING,
        "ready": True,
        "ready_at": at + 1,
        "started_at": at,
        **kw,
    }
    return ReplicaFacts(**values)  # type: ignore[arg-type]


def loading(job: str, revision: int = 1, at: float = NOW - 5, **kw: object) -> ReplicaFacts:
    return ready(job, revision, at, ready=False, ready_at=None, **kw)


def pending(job: str, revision: int = 1, why: str | None = None) -> ReplicaFacts:
    return ReplicaFacts(job, revision, JobState.PENDING, NOW - 1, job_reason=why)


def endpoint(*replicas: ReplicaFacts, **kw: object) -> EndpointFacts:
    values: dict[str, object] = {
        "name": "emb",
        "revision": 1,
        "desired_replicas": 1,
        "policy": POLICY,
        "replicas": replicas,
        "traffic": Traffic(known=True),
        **kw,
    }
    return EndpointFacts(**values)  # type: ignore[arg-type]


def kinds(plan: EndpointPlan) -> list[tuple[str, str | None]]:
    return [(type(a).__name__, getattr(a, "job_id", None)) for a in plan.actions]


def reason_of(plan: EndpointPlan, kind: type, job: str | None = None) -> str:
    for action in plan.actions:
        if isinstance(action, kind) and getattr(action, "job_id", None) == job:
            return str(action.reason)
    raise AssertionError(f"no {kind.__name__} {job} in {plan.actions}")


# -- start ---------------------------------------------------------------------------------


def test_a_new_endpoint_starts_its_min_replicas() -> None:
    plan = reconcile(endpoint(desired_replicas=2, policy=replace(POLICY, min_replicas=2)), NOW)
    assert kinds(plan) == [("Start", None), ("Start", None)]
    assert reason_of(plan, Start) == "scaling to 2 (have 0)"
    assert plan.desired == 2
    assert plan.reason == "starting 2 replicas"


def test_a_serving_endpoint_does_nothing() -> None:
    plan = reconcile(endpoint(ready("a")), NOW)
    assert plan.actions == ()
    assert plan.reason == "1 replica ready; idle"
    assert plan.notes is not None and "public" not in plan.notes


# -- replace -------------------------------------------------------------------------------


def test_a_replica_failing_liveness_after_serving_is_replaced() -> None:
    plan = reconcile(endpoint(ready("a", ready=False)), NOW)
    assert kinds(plan) == [("Start", None), ("Replace", "a")]
    assert reason_of(plan, Replace, "a") == "it was ready, then failed its liveness probe"
    assert reason_of(plan, Start).startswith("in place of replica job a")


def test_a_replica_not_ready_past_the_readiness_timeout_is_replaced() -> None:
    stuck = loading("a", at=NOW - 61)
    plan = reconcile(endpoint(stuck), NOW)
    assert kinds(plan) == [("Start", None), ("Replace", "a")]
    assert "was not ready 60 s after it started" in reason_of(plan, Replace, "a")
    # Within the timeout it is left to load.
    assert reconcile(endpoint(loading("a", at=NOW - 59)), NOW).actions == ()


# -- crash backoff ---------------------------------------------------------------------------


def test_replicas_that_keep_failing_are_started_again_after_a_doubling_delay() -> None:
    failures = (Failure(NOW - 1, exit_code=3), Failure(NOW - 10, exit_code=1))
    plan = reconcile(endpoint(failures=failures), NOW)
    assert plan.actions == ()  # two failures: wait 2 s after the last one
    assert plan.reason is not None
    assert plan.reason.startswith("replicas keep failing (2 in 10m, last: exit code 3)")
    assert "next try in 1s" in plan.reason
    assert plan.notes is not None and plan.notes["public"].startswith("its replicas keep failing")
    later = reconcile(endpoint(failures=failures), NOW + 1)
    assert kinds(later) == [("Start", None)]


def test_failures_older_than_the_memory_do_not_count() -> None:
    plan = reconcile(endpoint(failures=(Failure(NOW - 601, exit_code=1),)), NOW - 0.5)
    assert kinds(plan) == [("Start", None)]


# -- scale down ------------------------------------------------------------------------------


def test_scaling_down_stops_the_not_yet_ready_first_then_drains_the_oldest() -> None:
    facts = endpoint(
        ready("a", at=1.0),
        ready("b", at=2.0),
        loading("c"),
        desired_replicas=3,
        autoscale=autoscale.AutoscaleState(desired=3, created_at=0.0),
        policy=replace(POLICY, min_replicas=1),
    )
    plan = reconcile(facts, NOW)  # no traffic for a whole window: 1 replica
    assert plan.desired == 1
    assert kinds(plan) == [("Stop", "c"), ("Drain", "a")]
    assert reason_of(plan, Stop, "c") == "scaling down to 1; not serving yet"
    assert reason_of(plan, Drain, "a") == "scaling down to 1"


# -- rollout -----------------------------------------------------------------------------------


def test_a_rollout_surges_then_drains_the_old_replica_once_a_new_one_is_ready() -> None:
    starting = reconcile(endpoint(ready("old"), revision=2), NOW)
    assert kinds(starting) == [("Start", None)]
    assert reason_of(starting, Start) == "rolling out revision 2"
    assert starting.reason == "rolling out revision 2: 0 of 1 ready"
    loading_new = reconcile(endpoint(ready("old"), loading("new", 2), revision=2), NOW)
    assert loading_new.actions == ()  # the old one serves until the new one is ready
    assert loading_new.reason == (
        "rolling out revision 2: 0 of 1 ready; 1 replica starting: "
        "waiting for GET /health to answer 2xx"
    )

    done = reconcile(endpoint(ready("old"), ready("new", revision=2), revision=2), NOW)
    assert kinds(done) == [("Drain", "old")]
    assert reason_of(done, Drain, "old") == "rolling out revision 2: the others carry the load"


SICK = "node a is unhealthy: GPU 0: Xid 79, fell off the bus: reboot the node"


def test_a_replica_on_sick_hardware_is_replaced_new_one_ready_first() -> None:
    starting = reconcile(endpoint(ready("sick", sick=SICK)), NOW)
    assert kinds(starting) == [("Start", None)]  # it keeps serving meanwhile
    assert reason_of(starting, Start) == f"in place of replica job sick on sick hardware ({SICK})"
    waiting = reconcile(endpoint(ready("sick", sick=SICK), loading("new")), NOW)
    assert waiting.actions == ()
    done = reconcile(endpoint(ready("sick", sick=SICK), ready("new")), NOW)
    assert kinds(done) == [("Drain", "sick")]
    assert reason_of(done, Drain, "sick") == (
        f"its hardware is sick ({SICK}): its replacement carries the load"
    )


def test_a_replica_on_sick_hardware_that_does_not_serve_stops_at_once() -> None:
    two = replace(POLICY, min_replicas=2)
    plan = reconcile(
        endpoint(ready("a"), loading("b", sick=SICK), desired_replicas=2, policy=two), NOW
    )
    assert ("Stop", "b") in kinds(plan) and ("Start", None) in kinds(plan)
    assert reason_of(plan, Stop, "b") == f"on sick hardware ({SICK}) and not serving"


def test_an_old_replica_that_does_not_serve_is_stopped_at_once() -> None:
    plan = reconcile(endpoint(ready("a"), loading("b"), ready("new", revision=2), revision=2), NOW)
    assert ("Stop", "b") in kinds(plan)
    assert reason_of(plan, Stop, "b") == "revision 1 and not serving"


def test_without_room_for_a_surge_the_rollout_goes_by_replacement() -> None:
    facts = endpoint(ready("old", frees_room=True), pending("new", 2, NO_ROOM), revision=2)
    plan = reconcile(facts, NOW)
    assert plan.by_replacement
    assert kinds(plan) == [("Drain", "old")]
    assert "rollout by replacement" in reason_of(plan, Drain, "old")
    assert plan.reason is not None and "requests are held meanwhile" in plan.reason
    # Where stopping the old one would not free the room, it keeps serving.
    stuck = reconcile(replace(facts, replicas=(ready("old"), pending("new", 2, NO_ROOM))), NOW)
    assert stuck.actions == ()
    assert stuck.reason is not None and "would not free" in stuck.reason


# -- drain -------------------------------------------------------------------------------------


def draining(job: str, since: float) -> ReplicaFacts:
    return ready(job, draining_at=NOW - since)


def test_a_draining_replica_the_gateways_report_busy_waits_for_the_drain_timeout() -> None:
    busy = Traffic(known=True, per_replica={"r-d": 2})
    facts = endpoint(ready("a"), draining("d", 29), traffic=busy)
    assert reconcile(facts, NOW).actions == ()
    plan = reconcile(replace(facts, replicas=(ready("a"), draining("d", 30))), NOW)
    assert kinds(plan) == [("Stop", "d")]
    assert reason_of(plan, Stop, "d") == "drain timeout of 30 s passed"


def test_a_draining_replica_reported_idle_stops_after_a_moment() -> None:
    idle = Traffic(known=True, per_replica={"r-d": 0})
    assert reconcile(endpoint(ready("a"), draining("d", 0.1), traffic=idle), NOW).actions == ()
    plan = reconcile(endpoint(ready("a"), draining("d", DRAIN_QUIET_S), traffic=idle), NOW)
    assert kinds(plan) == [("Stop", "d")]
    assert reason_of(plan, Stop, "d").startswith("drained")


def test_without_a_gateway_count_a_draining_replica_gets_the_whole_timeout() -> None:
    # No gateway answered, or none counts this replica: its silence is not "idle".
    for traffic in (Traffic(known=False), Traffic(known=True, per_replica={})):
        facts = endpoint(ready("a"), draining("d", 10), traffic=traffic)
        assert reconcile(facts, NOW).actions == ()


# -- delete ------------------------------------------------------------------------------------


def test_deleting_drains_the_ready_stops_the_rest_and_goes_once_none_is_left() -> None:
    plan = reconcile(endpoint(ready("a"), loading("b"), deleting=True), NOW)
    assert kinds(plan) == [("Drain", "a"), ("Stop", "b")]
    assert not plan.delete
    assert plan.reason is None and plan.autoscale is None  # a deleted one is not scaled
    assert reconcile(endpoint(deleting=True), NOW).delete


# -- the autoscaler's state -------------------------------------------------------------------


def test_without_a_stored_state_the_autoscaler_starts_from_the_stored_count() -> None:
    # Requests arrive while no replica is ready: panic, which never scales down.
    facts = endpoint(
        loading("a"), loading("b"), loading("c"), traffic=Traffic(in_flight=1.0, known=True)
    )
    assert reconcile(replace(facts, desired_replicas=3), NOW).desired == 3
    assert reconcile(replace(facts, desired_replicas=1), NOW).desired == 1


def test_the_stored_state_is_carried_on_from() -> None:
    # A scale-up a moment ago: the autoscaler holds the count for a stable window.
    state = autoscale.AutoscaleState(desired=3, last_scale_up_at=NOW - 10, created_at=0.0)
    facts = endpoint(ready("a"), ready("b"), ready("c"), desired_replicas=3, autoscale=state)
    plan = reconcile(facts, NOW)
    assert plan.desired == 3
    assert plan.notes is not None and "holding" in plan.notes["autoscaler"]
    fresh = reconcile(replace(facts, autoscale=None), NOW)
    assert fresh.desired == 1  # from scratch it would have scaled down: the state matters


def test_traffic_becomes_a_sample_in_the_state() -> None:
    plan = reconcile(endpoint(ready("a"), traffic=Traffic(8.0, 5, known=True)), NOW)
    assert plan.autoscale is not None
    assert plan.autoscale.samples[-1] == autoscale.LoadSample(NOW, 8.0, 5, 0)
    assert plan.desired == 2


def test_the_state_survives_json() -> None:
    state = autoscale.AutoscaleState(desired=1, created_at=0.0)
    policy = POLICY.autoscaler()
    for t, flight in ((1.0, 0.1), (2.5, 17.25), (3.0, 1 / 3)):
        sample = autoscale.LoadSample(at=t, in_flight=flight, arrivals=2, held=1)
        state = autoscale.decide(policy, state, t, 1, sample).state
    assert state.panic_until is not None
    stored = json.loads(json.dumps(state.to_dict()))
    assert autoscale.AutoscaleState.from_dict(stored) == state


@pytest.mark.parametrize(
    "stored",
    [
        {},
        {"version": 99},
        {"version": 1, "desired": "2"},
        {**autoscale.AutoscaleState(desired=1).to_dict(), "samples": [[1.0, 2.0]]},
        {**autoscale.AutoscaleState(desired=1).to_dict(), "samples": None},
        {**autoscale.AutoscaleState(desired=1).to_dict(), "created_at": True},
    ],
)
def test_a_state_that_does_not_read_is_refused(stored: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        autoscale.AutoscaleState.from_dict(stored)
