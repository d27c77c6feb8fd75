"""A desired set larger than one message travels in parts and is applied whole."""

from __future__ import annotations

from corral.agent import reconcile
from corral.server.hub import split_desired
from corral.wire.agent import SERVER_MESSAGE, Desired, ReplicaAssignment


def assignment(rid: str, size: int = 0, started: bool = False) -> ReplicaAssignment:
    return ReplicaAssignment(
        replica_id=rid,
        job="j",
        workspace="w",
        attempt=1,
        rank=0,
        argv=["true"],
        env={},
        files={"f": "x" * size} if size else {},
        started=started,
    )


def test_a_set_an_older_agent_could_take_whole_is_one_message() -> None:
    # Older agents ignore `parts`: anything they could have taken goes whole, as before.
    [only] = split_desired([assignment(f"r{i}", size=40_000) for i in range(10)], generation=3)
    message = SERVER_MESSAGE.validate_json(only)
    assert isinstance(message, Desired) and (message.part, message.parts) == (0, 1)


def test_a_large_set_is_split_under_the_limit_and_loses_nothing() -> None:
    replicas = [assignment(f"r{i}", size=40_000) for i in range(10)]
    parts = split_desired(replicas, generation=7, limit=100_000, whole_limit=100_000)
    assert len(parts) > 1
    assert all(len(p) <= 100_000 for p in parts)
    messages = [SERVER_MESSAGE.validate_json(p) for p in parts]
    assert all(isinstance(m, Desired) and m.generation == 7 for m in messages)
    got = [a.replica_id for m in messages if isinstance(m, Desired) for a in m.replicas]
    assert got == [r.replica_id for r in replicas]
    assert {m.parts for m in messages if isinstance(m, Desired)} == {len(parts)}


def test_a_started_replica_the_node_does_not_know_is_not_started() -> None:
    plan = reconcile.plan({}, [assignment("new"), assignment("known-elsewhere", started=True)])
    assert [a.replica_id for a in plan.start] == ["new"]
    assert [a.replica_id for a in plan.unknown] == ["known-elsewhere"]
    assert reconcile.plan({"known-elsewhere": "running"}, plan.unknown).unknown == ()
