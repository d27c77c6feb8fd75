"""Dev pods: what state a pod is in, and when idle stop stops it. Pure: no I/O, no clock.

Idle is judged on two signals the control plane has first hand: the sessions it relays
(every shell, exec, forward and IDE connection goes through it) and the GPU utilization
its node's health checks report. An open session always keeps a pod: stopping a machine
under a logged-in user is the mistake SkyPilot made (#9524). A session shorter than
MIN_SESSION_S does not reset the idle clock, so a port scan or a `ssh pod true` from a
script cannot keep a forgotten pod alive forever.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SESSION_S = 5.0
WARN_BEFORE_S = 300.0


def pod_state(desired: str, job_state: str | None) -> str:
    """The pod's state from what it should do and its current job's state."""
    if desired != "running":
        return (
            "stopping"
            if job_state in ("pending", "starting", "running", "cancelling")
            else "stopped"
        )
    if job_state is None:
        return "pending"
    if job_state in ("pending", "starting", "running"):
        return job_state
    if job_state == "cancelling":
        return "stopping"
    return "failed"  # its job ended though the pod should run: the reason says why


@dataclass(frozen=True)
class IdleFacts:
    idle_stop_s: float | None  # None: never
    gpu_threshold: int  # percent
    open_sessions: int
    last_activity_at: float  # the pod started, or a session that counted closed
    gpu_util: list[int | None]  # the pod's GPUs, as last reported (None: not reported)
    warned_at: float | None


@dataclass(frozen=True)
class IdleDecision:
    stop: bool = False
    warn: bool = False  # record that it stops soon (once per idle stretch)
    stop_at: float | None = None  # when it would stop if nothing changes
    reason: str = ""


def busy_gpus(util: list[int | None], threshold: int) -> list[int]:
    return [u for u in util if u is not None and u > threshold]


def decide_idle(facts: IdleFacts, now: float) -> IdleDecision:
    if facts.idle_stop_s is None:
        return IdleDecision()
    if facts.open_sessions > 0:
        return IdleDecision()
    busy = busy_gpus(facts.gpu_util, facts.gpu_threshold)
    if busy:
        return IdleDecision()
    stop_at = facts.last_activity_at + facts.idle_stop_s
    if now >= stop_at:
        minutes = facts.idle_stop_s / 60
        gpus = f" and its GPUs under {facts.gpu_threshold}% utilization" if facts.gpu_util else ""
        return IdleDecision(
            stop=True,
            stop_at=stop_at,
            reason=f"idle: no session for {minutes:g} min{gpus} (idle_stop); "
            "`corral pod start` runs it again with its files",
        )
    warn = now >= stop_at - WARN_BEFORE_S and (
        facts.warned_at is None or facts.warned_at < facts.last_activity_at
    )
    return IdleDecision(warn=warn, stop_at=stop_at)


def counts_as_activity(opened_at: float, closed_at: float) -> bool:
    return closed_at - opened_at >= MIN_SESSION_S
