"""What to start and what to stop, given the replicas this node knows and the desired set. Pure.

`desired` is level-triggered: the complete set of replicas that should run here. A replica
the node has any record of, running or long exited, is never started again (a replica_id
runs at most once; a restart is a new replica). Every live replica outside the set is
stopped, including ones the server has never heard of (left over from an older agent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from corral.wire.agent import ReplicaAssignment

RecordState = Literal["running", "stopping", "exited"]


@dataclass(frozen=True)
class Plan:
    start: tuple[ReplicaAssignment, ...] = ()
    stop: tuple[str, ...] = ()
    # Running as far as the server knows, but this node has no record of them: reported
    # exited (status unknown), so that the server's recovery takes over.
    unknown: tuple[ReplicaAssignment, ...] = ()


def plan(known: Mapping[str, RecordState], desired: Sequence[ReplicaAssignment]) -> Plan:
    wanted: dict[str, ReplicaAssignment] = {}
    for assignment in desired:
        wanted.setdefault(assignment.replica_id, assignment)
    # A replica the server knows to be running but this node has no record of was not
    # started here (its record would exist): starting it now, from an assignment that
    # no longer carries its files and environment, would run something else.
    start = tuple(a for rid, a in wanted.items() if rid not in known and not a.started)
    unknown = tuple(a for rid, a in wanted.items() if rid not in known and a.started)
    stop = tuple(
        sorted(rid for rid, state in known.items() if state == "running" and rid not in wanted)
    )
    return Plan(start=start, stop=stop, unknown=unknown)
