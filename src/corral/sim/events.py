"""The virtual clock: a heap of events in a fixed, total order.

Two runs with the same inputs must pop events in the same order, so ties are broken by kind
(what happens first at one instant) and then by insertion order — never by object identity
or hash order. Events are named tuples so the heap compares them in C.
"""

from __future__ import annotations

import heapq
from enum import IntEnum
from typing import NamedTuple


class Kind(IntEnum):
    """Event kinds; at one instant they are handled in this order.

    Completions first, so the GPUs they free are seen by the same instant's round; repairs
    before failures, so a node repaired and failing at one instant ends up down; arrivals
    after both, so a job sees the cluster as it is; a pool's node joining (JOIN) and the
    fleet autoscaler's wake-up (SUPPLY) next; the placement round last of all, so one
    round sees everything that happened at its instant.
    """

    COMPLETE = 0
    REPAIR = 1
    FAIL = 2
    ARRIVE = 3
    JOIN = 4
    SUPPLY = 5
    ROUND = 6


class Event(NamedTuple):
    time: float
    kind: Kind
    seq: int
    # A job index (COMPLETE, ARRIVE) or a node index (FAIL, REPAIR, JOIN); -1 for ROUND
    # and SUPPLY.
    subject: int
    # COMPLETE: the attempt it ends, so the completion of an interrupted attempt is ignored.
    # FAIL/REPAIR: the failure cause's index in the profile. JOIN: the launch it ends, so a
    # launch given up on (released before it joined) never joins.
    tag: int


class EventQueue:
    """A min-heap of events and the virtual clock, which only moves forward."""

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0
        self.now = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, kind: Kind, subject: int = -1, tag: int = 0) -> None:
        if time < self.now:
            raise ValueError(f"event at t={time} is in the past (now t={self.now})")
        self._seq += 1
        heapq.heappush(self._heap, Event(time, kind, self._seq, subject, tag))

    def peek_time(self) -> float | None:
        return self._heap[0].time if self._heap else None

    def pop(self) -> Event:
        event = heapq.heappop(self._heap)
        self.now = event.time
        return event
