"""How jobs look in a terminal: the `job ls` table and the `job get` page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from corral.cli.output import (
    JOB_STATE_STYLE,
    REPLICA_STATE_STYLE,
    age,
    duration,
    esc,
    format_mib,
    styled,
    table,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from corral.spec import JobSpec
    from corral.spec.resources import Resources
    from corral.wire.api import JobView


def resources_text(spec: JobSpec) -> str:
    per = per_replica_text(spec.resources)
    return f"{spec.replicas} replicas × {per}" if spec.replicas > 1 else per


def per_replica_text(r: Resources) -> str:
    """One replica's resources: "H100:8 (≥80Gi each), 16 CPUs, 128Gi memory"."""
    parts = []
    if r.gpus.count:
        gpus = str(r.gpus)
        if r.gpus.min_memory:
            gpus += f" (≥{format_mib(r.gpus.min_memory)} each)"
        parts.append(f"{gpus} GPUs" if not r.gpus.type else gpus)
    parts.append(f"{r.cpus:g} CPU" + ("" if r.cpus == 1 else "s"))
    parts.append(f"{format_mib(r.memory)} memory")
    if r.disk:
        parts.append(f"{format_mib(r.disk)} disk")
    return ", ".join(parts)


def scheduling_text(job: JobView) -> str:
    """Priority (and class), preemptibility, topology, selector, runtime limit, history."""
    from corral.core.priorities import class_name

    spec = job.spec
    named = class_name(spec.priority)
    parts = [f"priority {spec.priority}" + (f" ({named})" if named else "")]
    parts.append("preemptible" if spec.preemptible else "not preemptible")
    if spec.topology:
        parts.append(f"within one {spec.topology}")
    if spec.node_selector:
        parts.append("on " + ",".join(f"{k}={v}" for k, v in sorted(spec.node_selector.items())))
    if spec.max_runtime is not None:
        parts.append(f"max runtime {duration(spec.max_runtime)}")
    if job.borrowed:
        parts.append("on borrowed quota")
    if job.preemptions:
        parts.append(f"preempted {job.preemptions}×")
    return " · ".join(parts)


def code_text(spec: JobSpec) -> str | None:
    """Where the code and environment come from: "workdir sha256:1a2b3c4d · python 3.11,
    requirements.txt · setup · image ghcr.io/x:1"; None when the spec names none."""
    parts = []
    if spec.workdir:
        parts.append(f"workdir {spec.workdir[:15]}")
    env = spec.environment
    if env is not None and not env.is_empty():
        what = [f"python {env.python}"] if env.python else []
        if isinstance(env.requirements, str):
            what.append(env.requirements)
        elif env.requirements:
            what.append(f"{len(env.requirements)} requirements")
        if env.uv_lock:
            what.append(env.uv_lock)
        parts.append("environment " + ", ".join(what))
    if spec.setup:
        parts.append("setup")
    if spec.image:
        parts.append(f"image {spec.image}")
    return " · ".join(parts) or None


def state_text(job: JobView) -> str:
    text = styled(job.state, JOB_STATE_STYLE.get(job.state))
    if job.exit_code is not None and job.state in ("failed", "succeeded"):
        text += f" (exit code {job.exit_code})"
    return text


def jobs_table(
    jobs: list[JobView], now: float | None = None, *, with_workspace: bool = False
) -> RenderableType:
    now = time.time() if now is None else now
    head = ("WORKSPACE",) if with_workspace else ()
    t = table(*head, "NAME", "STATE", "RUNNING", "GPUS", "ATTEMPT", "SUBMITTED", "REASON")
    for job in jobs:
        running = sum(1 for r in job.replicas if r.state == "running")
        gpus = job.spec.resources.gpus
        t.add_row(
            *((esc(job.workspace),) if with_workspace else ()),
            esc(job.name),
            state_text(job),
            f"{running}/{job.spec.replicas}",
            esc(gpus) if gpus.count else "-",
            str(job.attempt) if job.attempt else "-",
            age(job.submitted_at, now),
            esc(job.reason or ""),
        )
    return t


def cost_text(job: JobView) -> str | None:
    """ "$12.40 (3.1 GPU-hours)"; GPU-hours alone where a node's price is unknown."""
    c = job.cost
    if c is None:
        return None
    hours = f"{_hours(c.gpu_hours)} GPU-hours"
    if c.usd is None:
        if c.unpriced_gpu_hours >= c.gpu_hours:
            return f"{hours}; its nodes have no price (pool --price, or CORRAL_CATALOG)"
        unpriced = _hours(c.unpriced_gpu_hours)
        return f"{hours}; {unpriced} of them on nodes with no price, so no total"
    return f"${c.usd:,.2f} ({hours})"


def _hours(value: float) -> str:
    return f"{value:.1f}" if value >= 0.1 else f"{value:.3f}"


def print_job(console: Console, job: JobView, now: float | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("name", esc(job.name))
    grid.add_row("workspace", esc(job.workspace))
    grid.add_row("state", state_text(job))
    if job.reason:
        grid.add_row("reason", esc(job.reason))
    grid.add_row(
        "attempt",
        f"{job.attempt or '-'} (restarts: {job.restarts} of {job.spec.max_restarts} allowed)",
    )
    grid.add_row("command", esc(job.spec.display_command()))
    code = code_text(job.spec)
    if code:
        grid.add_row("code", esc(code))
    grid.add_row("resources", esc(resources_text(job.spec)))
    grid.add_row("scheduling", esc(scheduling_text(job)))
    times = [f"submitted {age(job.submitted_at, now)}"]
    if job.started_at is not None:
        times.append(f"started {age(job.started_at, now)}")
    if job.finished_at is not None:
        times.append(f"finished {age(job.finished_at, now)}")
        if job.started_at is not None:
            times.append(f"ran {duration(job.finished_at - job.started_at)}")
    grid.add_row("time", " · ".join(times))
    if job.step is not None or job.checkpoint_step is not None:
        progress = [] if job.step is None else [f"step {job.step}"]
        if job.checkpoint_step is not None:
            progress.append(f"checkpoint at step {job.checkpoint_step}")
        grid.add_row("progress", " · ".join(progress))
    if job.goodput is not None and job.goodput.wall_s > 0:
        g = job.goodput
        text = f"ETTR {g.ettr:.1%} of {duration(g.wall_s)}"
        if g.lost_by_cause:
            lost = ", ".join(
                f"{cause.replace('_', ' ')} {duration(s)}" for cause, s in g.lost_by_cause.items()
            )
            text += f" · lost: {lost}"
        grid.add_row("goodput", esc(text))
    cost = cost_text(job)
    if cost:
        grid.add_row("cost", esc(cost))
    console.print(grid)

    if len(job.attempts) > 1 or any(a.end_cause for a in job.attempts):
        t = table("ATTEMPT", "REPLICAS", "STARTED", "RAN", "STEPS", "ENDED BY")
        for a in job.attempts:
            end = a.ended_at if a.ended_at is not None else now
            steps = f"{a.start_step}→{a.step}" if a.step is not None else f"{a.start_step}→"
            t.add_row(
                str(a.attempt),
                str(a.replicas),
                age(a.started_at, now),
                duration(end - a.started_at),
                steps,
                esc((a.end_cause or "").replace("_", " ") or ("-" if a.ended_at else "running")),
            )
        console.print()
        console.print("[bold]attempts[/]")
        console.print(t)

    if job.replicas:
        t = table("RANK", "NODE", "GPUS", "STATE", "EXIT", "PID", "STARTED", "REASON")
        for r in sorted(job.replicas, key=lambda r: r.rank):
            t.add_row(
                str(r.rank),
                esc(r.node or "-"),
                ",".join(str(g) for g in r.gpus) or "-",
                styled(r.state, REPLICA_STATE_STYLE.get(r.state)),
                "-" if r.exit_code is None else str(r.exit_code),
                "-" if r.pid is None else str(r.pid),
                age(r.started_at, now),
                esc(r.reason or ""),
            )
        console.print()
        console.print(f"[bold]replicas[/] (attempt {job.attempt})")
        console.print(t)

    if job.log_tail:
        console.print()
        console.print("[bold]log tail[/]")
        for line in job.log_tail:
            console.print(Text("  " + line.rstrip("\n")))
        console.print()
        console.print(f"[dim]full log: corral job logs {esc(job.name)}[/]")
