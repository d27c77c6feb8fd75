"""A replica's failure is blamed on its port only when the holder is shown to be older:
start times are clock ticks (10 ms), and a holder started in the replica's own tick is not
shown to be (a flake in CI: a stranger started just after the replica was blamed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent import ownership
from corral.agent.records import ReplicaRecord
from corral.agent.runner import Runner
from corral.wire.agent import ReplicaAssignment

PORT = 29555
TICK = 1_000


def _failed(tmp_path: Path) -> ReplicaRecord:
    path = tmp_path / "replicas" / "r1"
    path.mkdir(parents=True)
    assignment = ReplicaAssignment(
        replica_id="r1",
        job="j",
        workspace="w",
        attempt=1,
        rank=0,
        argv=["true"],
        env={},
        port=PORT,
    )
    return ReplicaRecord("r1", path, assignment, pid=10, pgid=10, start_time=TICK, exit_code=1)


@pytest.mark.parametrize(("holder_started", "blamed"), [(TICK - 1, True), (TICK, False)])
def test_the_port_is_blamed_only_for_a_holder_started_in_an_earlier_tick(
    holder_started: int, blamed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = ownership.Holder(PORT, uid=1000, pid=99, name="squatter", start_time=holder_started)
    monkeypatch.setattr(ownership, "held_by_others", lambda port, shim, pgid: [holder])
    record = _failed(tmp_path)
    Runner(tmp_path)._blame_port(record)
    assert (record.port_conflict == PORT) is blamed
    assert (record.error is not None and "since before it started" in record.error) is blamed
