"""The job page's view model: a JobView, the replicas of its attempts and `now` in, what the
templates show out. Pure: no I/O, no clock.

The attempts timeline puts every attempt on one time axis, from the job's submission to its
end (to `now` while it lives), each bar placed and sized in percent of that axis; a running
attempt reaches `now`. Progress is drawn from what the store keeps: per attempt the step it
resumed from, when it took its first new step, and its last step and when that was
reported (the store keeps no step history beyond that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from corral.core.states import TERMINAL_JOB_STATES, JobState
from corral.server.services.job_history import MAX_ATTEMPTS, AttemptMarks, AttemptRun
from corral.wire.api import AttemptView, GoodputView, JobView
from corral.wire.pools import CostView

MAX_NODES_SHOWN = 6  # per attempt bar; the rest is counted
TICKS = 5

# An attempt's end, in words and as the bar's class (console.css: .attempt .bar.<kind>).
_CAUSE_WORDS = {
    "node_lost": "node lost",
    "gpu_xid": "GPU error (Xid)",
    "node_unhealthy": "node unhealthy",
    "port_in_use": "port in use",
    "exit_unknown": "exit unknown",
    "collective_timeout": "collective timeout",
    "hang": "hang (no progress)",
    "user_error": "the script failed",
    "preempted": "preempted",
}


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline."""

    attempt: int
    left: float  # percent of the axis where it starts
    width: float  # percent of the axis it covers
    kind: str  # running, ok, ended-bad, preempted, stopped
    outcome: str  # how it ended, in words ("running" while it runs)
    reason: str | None
    nodes: tuple[str, ...]  # where its replicas ran, by rank, each node once
    more_nodes: int  # nodes beyond those named
    started_at: float
    ended_at: float | None
    duration_s: float
    steps: str | None  # "0 → 1200", None when it reported none


@dataclass(frozen=True)
class Tick:
    left: float  # percent
    label: str  # UTC time of day


@dataclass(frozen=True)
class Timeline:
    start: float
    end: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    earlier: int  # attempts before the first shown (only the latest are read)


@dataclass(frozen=True)
class Lost:
    cause: str  # in words
    seconds: float
    share: float  # of the wall time, 0..1


@dataclass(frozen=True)
class Goodput:
    ettr: str  # "87.5%"
    wall_s: float
    productive_s: float
    startup_s: float
    lost: tuple[Lost, ...]
    lost_s: float


@dataclass(frozen=True)
class JobPage:
    job: JobView
    finished: bool
    pending: bool
    resources: str  # what each replica asks for, in words
    reason: str | None  # why it is pending, or why it ended, in words
    replica_ranks: tuple[int, ...]  # one log tab each
    timeline: Timeline | None
    goodput: Goodput | None
    cost: str | None  # "$12.40", or GPU-hours where no price is known
    cost_note: str | None  # the GPU-hours behind it, or why there is no total
    progress: str | None  # the latest step and checkpoint in words; None: none reported
    has_progress: bool  # worth a chart
    spec_yaml: str
    can_cancel: bool


def build(job: JobView, runs: Sequence[AttemptRun], now: float, *, can_act: bool) -> JobPage:
    finished = job.state in TERMINAL_JOB_STATES
    ranks = max(len(job.replicas), job.spec.replicas)
    return JobPage(
        job=job,
        finished=finished,
        pending=job.state == JobState.PENDING,
        resources=resources_text(job),
        reason=reason_text(job),
        replica_ranks=tuple(range(ranks)),
        timeline=timeline(job, runs, now),
        goodput=goodput(job.goodput),
        cost=cost_text(job.cost),
        cost_note=cost_note(job.cost),
        progress=progress_text(job),
        has_progress=any(a.step is not None for a in job.attempts),
        spec_yaml=spec_yaml(job),
        can_cancel=can_act and not finished and job.state != JobState.CANCELLING,
    )


def reason_text(job: JobView) -> str | None:
    if job.reason:
        return job.reason
    if job.state == JobState.PENDING:
        return "waiting for the scheduler"
    return None


def resources_text(job: JobView) -> str:
    """ "2 replicas x H100:8, 16 CPUs, 128 GiB memory" (as `corral job get` says it)"""
    r = job.spec.resources
    parts = [str(r.gpus) if r.gpus.type else f"{r.gpus} GPUs"] if r.gpus.count else []
    parts.append(f"{r.cpus:g} CPU" + ("" if r.cpus == 1 else "s"))
    parts.append(f"{_mib(r.memory)} memory")
    if r.disk:
        parts.append(f"{_mib(r.disk)} disk")
    each = ", ".join(parts)
    return f"{job.spec.replicas} replicas × {each}" if job.spec.replicas > 1 else each


def _mib(value: int) -> str:
    return f"{value / 1024:g} GiB" if value >= 1024 else f"{value} MiB"


# -- the attempts timeline ------------------------------------------------------------------


def timeline(job: JobView, runs: Sequence[AttemptRun], now: float) -> Timeline | None:
    """The job's attempts on one axis from its submission to its end (or `now`)."""
    shown = job.attempts[-MAX_ATTEMPTS:]
    if not shown:
        return None
    # From the submission (the wait for the first placement shows), or from the first
    # attempt shown when earlier ones are left out.
    first = shown[0].started_at
    start = min(job.submitted_at, first) if shown[0] is job.attempts[0] else first
    last_end = max((a.ended_at for a in shown if a.ended_at is not None), default=start)
    if job.finished_at is not None and all(a.ended_at is not None for a in shown):
        end = max(job.finished_at, last_end)
    else:
        end = max(now, last_end)
    span = max(end - start, 1e-6)
    nodes = _nodes_by_attempt(runs)
    last = shown[-1].attempt
    bars = tuple(
        _bar(a, job, nodes.get(a.attempt, ()), start, end, span, a.attempt == last) for a in shown
    )
    ticks = tuple(
        Tick(100.0 * i / (TICKS - 1), _tick_label(span * i / (TICKS - 1), start))
        for i in range(TICKS)
    )
    return Timeline(start, end, bars, ticks, earlier=len(job.attempts) - len(shown))


def _bar(
    a: AttemptView,
    job: JobView,
    nodes: Sequence[str],
    start: float,
    end: float,
    span: float,
    is_last: bool,
) -> Bar:
    stop = a.ended_at if a.ended_at is not None else end
    kind, outcome = _outcome(a, job, is_last)
    left = 100.0 * (a.started_at - start) / span
    width = 100.0 * (stop - a.started_at) / span
    return Bar(
        attempt=a.attempt,
        left=round(_clamp(left), 3),
        width=round(_clamp(width, 0.0, 100.0 - _clamp(left)), 3),
        kind=kind,
        outcome=outcome,
        reason=a.reason,
        nodes=tuple(nodes[:MAX_NODES_SHOWN]),
        more_nodes=max(0, len(nodes) - MAX_NODES_SHOWN),
        started_at=a.started_at,
        ended_at=a.ended_at,
        duration_s=max(0.0, stop - a.started_at),
        steps=None if a.step is None else f"{a.start_step} → {a.step}",
    )


def _outcome(a: AttemptView, job: JobView, is_last: bool) -> tuple[str, str]:
    """(bar class, words): a cause where the store names one; the last attempt of an ended
    job ended as the job did (success, cancellation, a limit)."""
    if a.end_cause is not None:
        words = _CAUSE_WORDS.get(a.end_cause, a.end_cause.replace("_", " "))
        return ("preempted" if a.end_cause == "preempted" else "ended-bad"), words
    if a.ended_at is None:
        return "running", "running"
    if is_last and job.state == JobState.SUCCEEDED:
        return "ok", "succeeded"
    if is_last and job.state == JobState.FAILED:
        return "ended-bad", "failed"
    return "stopped", "cancelled" if job.state in (
        JobState.CANCELLED,
        JobState.CANCELLING,
    ) else "ended"


def _nodes_by_attempt(runs: Sequence[AttemptRun]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for run in sorted(runs, key=lambda r: (r.attempt, r.rank)):
        names = out.setdefault(run.attempt, [])
        name = run.node or "(deleted node)"
        if name not in names:
            names.append(name)
    return out


def _clamp(x: float, low: float = 0.0, high: float = 100.0) -> float:
    return min(high, max(low, x))


def _tick_label(since_start: float, start: float) -> str:
    """The axis's start as a UTC time of day, the other ticks as time since it."""
    if since_start == 0:
        return dt.datetime.fromtimestamp(start, dt.UTC).strftime("%H:%M:%S UTC")
    s = since_start
    if s < 10:
        return f"+{s:.1f} s"
    if s < 90:
        return f"+{s:.0f} s"
    if s < 90 * 60:
        return f"+{s / 60:.1f} m"
    if s < 36 * 3600:
        return f"+{s / 3600:.1f} h"
    return f"+{s / 86400:.1f} d"


# -- goodput, cost, progress ----------------------------------------------------------------


def goodput(g: GoodputView | None) -> Goodput | None:
    """ETTR and where the rest of the wall time went; None before any time has passed."""
    if g is None or g.wall_s <= 0:
        return None
    lost = tuple(
        Lost(_CAUSE_WORDS.get(cause, cause.replace("_", " ")), s, s / g.wall_s)
        for cause, s in sorted(g.lost_by_cause.items(), key=lambda i: -i[1])
        if s > 0
    )
    return Goodput(
        ettr=ettr_text(g.ettr),
        wall_s=g.wall_s,
        productive_s=g.productive_s,
        startup_s=g.startup_s,
        lost=lost,
        lost_s=sum(item.seconds for item in lost),
    )


def ettr_text(ettr: float) -> str:
    return f"{ettr:.1%}"


def cost_text(c: CostView | None) -> str | None:
    """ "$12.40"; the GPU-hours where a node's price is unknown (no total then)."""
    if c is None:
        return None
    return f"{_hours(c.gpu_hours)} GPU-hours" if c.usd is None else f"${c.usd:,.2f}"


def cost_note(c: CostView | None) -> str | None:
    """What the cost stands on, as `corral job get` says it."""
    if c is None:
        return None
    if c.usd is not None:
        return f"{_hours(c.gpu_hours)} GPU-hours"
    if c.unpriced_gpu_hours >= c.gpu_hours:
        return "its nodes have no price"
    return f"{_hours(c.unpriced_gpu_hours)} of them on nodes with no price, so no total"


def _hours(value: float) -> str:
    return f"{value:.1f}" if value >= 0.1 else f"{value:.3f}"


def progress_text(job: JobView) -> str | None:
    parts = [] if job.step is None else [f"step {job.step:,}"]
    if job.checkpoint_step is not None:
        parts.append(f"checkpoint at step {job.checkpoint_step:,}")
    return " · ".join(parts) or None


def progress_series(
    attempts: Sequence[AttemptView],
    runs: Sequence[AttemptRun],
    marks: Mapping[int, AttemptMarks],
    now: float,
) -> dict[str, Any]:
    """The chart's JSON (console.js): the training step over time, one stretch per attempt
    — from the step it resumed from, flat through its start-up to its first new step, up to
    its last step when that was reported — with a gap between attempts; and each
    attempt's last checkpoint where it was reported. The store keeps these points only, so
    the line between them is straight."""
    reported: dict[int, float] = {}
    for run in runs:
        if run.progress_at is not None:
            reported[run.attempt] = max(reported.get(run.attempt, run.progress_at), run.progress_at)
    points: list[tuple[float, float | None, float | None]] = []  # (x, step, checkpoint)
    for a in attempts:
        if a.step is None:
            continue
        mark = marks.get(a.attempt, AttemptMarks(None, None))
        if points:  # a gap: no line from one attempt's last step to the next one's start
            points.append(((points[-1][0] + a.started_at) / 2, None, None))
        x = a.started_at
        points.append((x, float(a.start_step), None))
        if mark.first_step_at is not None and mark.first_step_at > x:
            x = mark.first_step_at
            points.append((x, float(a.start_step), None))
        last_at = reported.get(a.attempt, a.ended_at if a.ended_at is not None else now)
        points.append((max(last_at, x), float(a.step), None))
    for a in attempts:
        at = marks.get(a.attempt, AttemptMarks(None, None)).checkpoint_at
        if a.checkpoint_step is not None and at is not None:
            points.append((at, None, float(a.checkpoint_step)))
    points.sort(key=lambda p: p[0])  # stable: an attempt's points keep their order
    return {
        "x": [p[0] for p in points],
        "series": [
            {"label": "step", "unit": "", "values": [p[1] for p in points]},
            {"label": "checkpoint", "unit": "", "values": [p[2] for p in points]},
        ],
    }


# -- the spec -------------------------------------------------------------------------------


class _SpecDumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # A multi-line command reads as the block it was written as, not one escaped line.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SpecDumper.add_representer(str, _text)


def spec_yaml(job: JobView) -> str:
    """The stored spec as YAML, leaving out what is empty."""
    raw = job.spec.model_dump(mode="json", exclude_none=True)
    kept = {k: v for k, v in raw.items() if v not in ({}, [])}
    return yaml.dump(kept, Dumper=_SpecDumper, sort_keys=False, allow_unicode=True)
