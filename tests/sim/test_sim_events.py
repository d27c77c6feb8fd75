"""The virtual clock pops events by time, then kind, then insertion order."""

from __future__ import annotations

import pytest

from corral.sim.events import EventQueue, Kind


def test_events_pop_by_time_then_kind_then_insertion() -> None:
    q = EventQueue()
    q.push(5.0, Kind.ROUND)
    q.push(5.0, Kind.ARRIVE, 2)
    q.push(5.0, Kind.COMPLETE, 9)
    q.push(1.0, Kind.ROUND)
    q.push(5.0, Kind.ARRIVE, 1)
    q.push(5.0, Kind.FAIL, 3)
    q.push(5.0, Kind.REPAIR, 4)
    order = [(e.time, e.kind, e.subject) for e in (q.pop() for _ in range(len(q)))]
    assert order == [
        (1.0, Kind.ROUND, -1),
        (5.0, Kind.COMPLETE, 9),
        (5.0, Kind.REPAIR, 4),
        (5.0, Kind.FAIL, 3),
        (5.0, Kind.ARRIVE, 2),
        (5.0, Kind.ARRIVE, 1),
        (5.0, Kind.ROUND, -1),
    ]
    assert q.now == 5.0


def test_the_clock_never_goes_back() -> None:
    q = EventQueue()
    q.push(10.0, Kind.ARRIVE, 0)
    q.pop()
    with pytest.raises(ValueError, match="in the past"):
        q.push(9.0, Kind.ROUND)
    q.push(10.0, Kind.ROUND)  # the same instant is fine
    assert q.peek_time() == 10.0
