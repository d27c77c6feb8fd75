"""Liveness decisions, pure: which nodes are lost, which jobs ran out of time, which
jobs asked to be decided about again now.

The server loads the facts (controllers/liveness.py) and applies the plan; a node heard
from between the two is not lost (the applier checks again).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSilence:
    id: str
    last_heard: float | None  # None: never heard from


@dataclass(frozen=True)
class RunningJob:
    id: str
    started_at: float
    max_runtime_s: float | None


@dataclass(frozen=True)
class LivenessFacts:
    nodes: tuple[NodeSilence, ...]  # the nodes not lost yet
    running: tuple[RunningJob, ...]
    recheck: tuple[str, ...]  # jobs whose recheck time has come
    lost_after_s: float
    alive_since: float  # when this server started: silence counts from then


@dataclass(frozen=True)
class LostNode:
    id: str
    silent_s: float
    cutoff: float  # lost only if still not heard from since this time


@dataclass(frozen=True)
class Overdue:
    job_id: str
    max_runtime_s: float


@dataclass(frozen=True)
class LivenessPlan:
    lost: tuple[LostNode, ...] = ()
    overdue: tuple[Overdue, ...] = ()
    recheck: tuple[str, ...] = ()


def decide(facts: LivenessFacts, now: float) -> LivenessPlan:
    cutoff = now - facts.lost_after_s
    lost: list[LostNode] = []
    # A node cannot have been heard from before this server started: a restart of the
    # server must not lose the whole fleet.
    if facts.alive_since <= cutoff:
        for node in facts.nodes:
            if node.last_heard is None or node.last_heard < cutoff:
                silent = now - max(node.last_heard or 0.0, facts.alive_since)
                lost.append(LostNode(node.id, silent, cutoff))
    overdue = tuple(
        Overdue(job.id, job.max_runtime_s)
        for job in facts.running
        if job.max_runtime_s is not None and now >= job.started_at + job.max_runtime_s
    )
    return LivenessPlan(tuple(lost), overdue, tuple(sorted(facts.recheck)))
