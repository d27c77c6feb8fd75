"""The rollout decision and the endpoint's reasons (core/rollout.py), table by table."""

from __future__ import annotations

import pytest

from corral.core.rollout import (
    EndpointStatus,
    OldReplica,
    PendingKind,
    Phase,
    ReplicaStatus,
    RolloutFacts,
    RolloutPlan,
    decide,
    headline,
    pending_kind,
    public_reason,
)
from corral.core.scheduler import reasons

A = OldReplica("a", ready=True, submitted_at=1.0, frees_room=True)
B = OldReplica("b", ready=True, submitted_at=2.0, frees_room=True)
A_NO_ROOM = OldReplica("a", ready=True, submitted_at=1.0, frees_room=False)
LOADING = OldReplica("l", ready=False, submitted_at=3.0, frees_room=True)


def facts(*old: OldReplica, **kw: int) -> RolloutFacts:
    values = {"revision": 2, "desired": 1, "min_replicas": 1, **kw}
    return RolloutFacts(old=old, **values)  # type: ignore[arg-type]


ROLLOUTS: list[tuple[str, RolloutFacts, tuple[str, ...], tuple[str, ...], bool, str | None]] = [
    # name, facts, stop, retire, by_replacement, reason starts with
    ("no rollout", facts(), (), (), False, None),
    ("surge: new not ready yet", facts(A), (), (), False, "rolling out revision 2: 0 of 1 ready"),
    ("surge: new ready, old drains", facts(A, new_ready=1), (), ("a",), False, None),
    (
        "surge: two old, one new ready keeps one",
        facts(A, B, desired=2, min_replicas=2, new_ready=1),
        (),
        ("a",),
        False,
        "rolling out revision 2: 1 of 2 ready; 1 old replica draining",
    ),
    ("an old replica that serves nothing stops", facts(A, LOADING), ("l",), (), False, None),
    (
        "no room: replace the oldest",
        facts(A, new_waiting_for_room=1),
        (),
        ("a",),
        True,
        "rolling out revision 2 by replacement: no node has room for a surge; stopped 1 old "
        "replica; 0 of 1 ready (no replica serves until the new one is ready",
    ),
    (
        "no room, two replicas: one goes, one serves",
        facts(A, B, desired=2, min_replicas=1, new_waiting_for_room=2),
        (),
        ("a",),
        True,
        None,
    ),
    (
        "no room: one at a time (the last one's room is on its way)",
        facts(B, desired=2, new_waiting_for_room=1, stopping=1, old_stopping=1),
        (),
        (),
        True,
        "rolling out revision 2 by replacement: no node has room for a surge; waiting for "
        "1 replica to stop",
    ),
    (
        "no room: one at a time (the last replacement is still starting)",
        facts(B, desired=2, new_waiting_for_room=1, new_starting=1),
        (),
        (),
        True,
        None,
    ),
    (
        "no room, but stopping the old one would not make it",
        facts(A_NO_ROOM, new_waiting_for_room=1),
        (),
        (),
        False,
        "rolling out revision 2: 0 of 1 ready; the new replicas wait for room",
    ),
    (
        "only draining old ones left",
        facts(new_ready=1, old_stopping=1, stopping=1),
        (),
        (),
        False,
        "rolling out revision 2: 1 of 1 ready; 1 old replica draining",
    ),
]


@pytest.mark.parametrize(
    ("facts_", "stop", "retire", "replacing", "reason"),
    [row[1:] for row in ROLLOUTS],
    ids=[row[0] for row in ROLLOUTS],
)
def test_rollout(
    facts_: RolloutFacts,
    stop: tuple[str, ...],
    retire: tuple[str, ...],
    replacing: bool,
    reason: str | None,
) -> None:
    plan = decide(facts_)
    assert (plan.stop, plan.retire, plan.by_replacement) == (stop, retire, replacing)
    if reason is None:
        assert plan.reason is None or plan.reason.startswith("rolling out revision 2")
    else:
        assert plan.reason is not None and plan.reason.startswith(reason), plan.reason
    if not facts_.old and not facts_.old_stopping:
        assert plan == RolloutPlan()


def test_replacement_keeps_min_replicas_where_the_replicas_allow() -> None:
    plan = decide(facts(A, B, desired=2, min_replicas=2, new_waiting_for_room=1))
    assert plan.retire == ("a",)
    assert plan.reason is not None and "below min_replicas=2" in plan.reason


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (
            reasons.NO_ROOM_CPU.format(replicas=1, demand="2 CPUs", level="node"),
            PendingKind.ROOM,
        ),
        (
            reasons.NO_ROOM.format(replicas=1, gpus=1, what="GPU", level="node", free=0)
            + reasons.PREEMPTION_WOULD_NOT_FIT.format(victims=2),
            PendingKind.ROOM,
        ),
        (
            reasons.NO_SUCH_GPU.format(what="any", memory="", models="none"),
            PendingKind.NEVER_FITS,
        ),
        (reasons.NODE_TOO_SMALL.format(need=64, unit="CPUs", have=2), PendingKind.NEVER_FITS),
        (reasons.NO_NODES, PendingKind.NO_NODES),
        ("attempt 1 preempted for job 'x'; queued again", PendingKind.OTHER),
        (None, PendingKind.OTHER),
    ],
)
def test_pending_reasons_are_recognised(reason: str | None, kind: PendingKind) -> None:
    assert pending_kind(reason) == kind


NO_ROOM = "needs 1× (2 CPUs) in one node; no node has room now"
PROBE = "GET /health answered 404 for 40 s"


def status(*replicas: ReplicaStatus, desired: int = 1, **kw: object) -> EndpointStatus:
    return EndpointStatus(desired, replicas, "/health", **kw)  # type: ignore[arg-type]


HEADLINES: list[tuple[str, EndpointStatus, str]] = [
    ("idle", status(ReplicaStatus(Phase.READY), idle=True), "1 replica ready; idle"),
    (
        "serving",
        status(ReplicaStatus(Phase.READY), ReplicaStatus(Phase.READY), desired=2),
        "2 replicas ready; serving",
    ),
    (
        "pending: the scheduler's words",
        status(ReplicaStatus(Phase.PENDING, NO_ROOM)),
        f"1 replica waiting for a node: {NO_ROOM}",
    ),
    (
        "starting with a failing probe: the probe's words",
        status(ReplicaStatus(Phase.STARTING, PROBE)),
        f"1 replica starting: {PROBE}",
    ),
    (
        "starting, nothing said yet",
        status(ReplicaStatus(Phase.STARTING)),
        "1 replica starting: waiting for GET /health to answer 2xx",
    ),
    (
        "was ready, fails now",
        status(ReplicaStatus(Phase.UNREADY, PROBE)),
        f"1 replica not ready: {PROBE}",
    ),
    (
        "scaling out",
        status(ReplicaStatus(Phase.READY), ReplicaStatus(Phase.PENDING, NO_ROOM), desired=2),
        f"scaling to 2 replicas: 1 ready; 1 replica waiting for a node: {NO_ROOM}",
    ),
    ("scaled to zero", status(desired=0), "scaled to zero: the first request starts a replica"),
    (
        "rollout with a blocked new replica",
        status(ReplicaStatus(Phase.PENDING, NO_ROOM), rollout="rolling out revision 2: 0 of 1"),
        f"rolling out revision 2: 0 of 1; 1 replica waiting for a node: {NO_ROOM}",
    ),
    (
        "failing wins",
        status(ReplicaStatus(Phase.READY), failing="replicas keep failing (exit code 1)"),
        "replicas keep failing (exit code 1)",
    ),
]


@pytest.mark.parametrize(
    ("status_", "expected"), [h[1:] for h in HEADLINES], ids=[h[0] for h in HEADLINES]
)
def test_headline(status_: EndpointStatus, expected: str) -> None:
    assert headline(status_) == expected
    assert "panic" not in headline(status_) and "in flight" not in headline(status_)


PUBLIC: list[tuple[str, EndpointStatus, tuple[PendingKind, ...], str | None]] = [
    ("ready: nothing to say", status(ReplicaStatus(Phase.READY)), (), None),
    (
        "no room",
        status(ReplicaStatus(Phase.PENDING, NO_ROOM)),
        (PendingKind.ROOM,),
        "no node has room for a replica now",
    ),
    (
        "never fits",
        status(ReplicaStatus(Phase.PENDING, "no ready node has any GPUs")),
        (PendingKind.NEVER_FITS,),
        "no node can run a replica as asked",
    ),
    (
        "probe: the answer's status only",
        status(ReplicaStatus(Phase.STARTING, PROBE)),
        (),
        "replica not ready: its readiness check answered 404",
    ),
    (
        "probe: never the spec's path (it may carry a key)",
        status(ReplicaStatus(Phase.STARTING, "GET /health?key=s3cret answered 401 for 9 s")),
        (),
        "replica not ready: its readiness check answered 401",
    ),
    (
        "probe words that are not an answer stay out",
        status(ReplicaStatus(Phase.STARTING, "port 8000 is held by pid 1234 (secret-tool)")),
        (),
        "a replica is starting and not ready yet",
    ),
    (
        "keeps failing",
        status(failing="replicas keep failing (3 in 10m, last: exit code 1)"),
        (),
        "its replicas keep failing as they start; corral retries with a delay",
    ),
]


@pytest.mark.parametrize(
    ("status_", "kinds", "expected"), [p[1:] for p in PUBLIC], ids=[p[0] for p in PUBLIC]
)
def test_public_reason_is_about_capacity_and_readiness_only(
    status_: EndpointStatus, kinds: tuple[PendingKind, ...], expected: str | None
) -> None:
    assert public_reason(status_, kinds) == expected
