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
    # When this server saw its agent's connection close (None: open, or not seen closing).
    closed_at: float | None = None
    lifeline: bool = False  # its agent keeps a lifeline (agent/lifeline.py)
    lifeline_at: float | None = None  # when the lifeline last spoke


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
    # Lost this long after its connection closed when its lifeline is silent since.
    closed_lost_after_s: float | None = None


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


def _dead_host(node: NodeSilence, facts: LivenessFacts, now: float) -> bool:
    """Its connection closed and nothing of it spoke since: neither the agent (a restarted
    one says hello) nor the lifeline, which outlives the agent and speaks within a second
    of the agent going away. An agent without a lifeline is only lost by silence: its
    restart must never look like a dead host (its replicas would run twice)."""
    bound = facts.closed_lost_after_s
    if bound is None or node.closed_at is None or not node.lifeline:
        return False
    if now - node.closed_at < bound:
        return False
    if node.last_heard is not None and node.last_heard > node.closed_at:
        return False
    return node.lifeline_at is None or node.lifeline_at <= node.closed_at


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
    found = {n.id for n in lost}
    for node in facts.nodes:
        if node.id not in found and _dead_host(node, facts, now):
            assert node.closed_at is not None
            lost.append(LostNode(node.id, now - node.closed_at, node.closed_at))
    overdue = tuple(
        Overdue(job.id, job.max_runtime_s)
        for job in facts.running
        if job.max_runtime_s is not None and now >= job.started_at + job.max_runtime_s
    )
    return LivenessPlan(tuple(lost), overdue, tuple(sorted(facts.recheck)))
