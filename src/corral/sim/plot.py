"""A PNG of one or more runs: utilization, queued demand and fragmentation over time, and
for fill runs the allocation curve. matplotlib is imported here only, when a plot is asked
for, so the simulator runs without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.sim.report import SimReport

MAX_POINTS = 2000  # per line; a long replay has one sample per event instant


def _thin(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    step = max(1, len(xs) // MAX_POINTS)
    return xs[::step], ys[::step]


def _time_unit(reports: list[SimReport]) -> tuple[str, float]:
    """Hours for runs up to a few days, days beyond (a 149-day trace in hours is unreadable)."""
    longest = max(
        (r.series.t[-1] for r in reports if r.series is not None and len(r.series)), default=0.0
    )
    return ("days", 86400.0) if longest > 3 * 86400 else ("h", 3600.0)


def plot_reports(reports: list[SimReport], path: str | Path) -> Path:
    fig = figure(reports)
    import matplotlib.pyplot as plt

    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def figure(reports: list[SimReport]) -> Any:
    """The matplotlib Figure of `reports` (every axis labelled with its unit)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'matplotlib>=3.8,<4'") from None
    fill = any(r.allocation_curve for r in reports)
    fig, axes = plt.subplots(4 if fill else 3, 1, figsize=(10, 11 if fill else 9), sharex=False)
    ax_util, ax_queue, ax_frag = axes[0], axes[1], axes[2]
    unit, per = _time_unit(reports)
    never_queued = True
    for r in reports:
        s = r.series
        if s is None or not len(s) or not r.gpus:
            continue
        xs = [t / per for t in s.t]
        _step(ax_util, *_thin(xs, [100 * u / r.gpus for u in s.used]), r.policy)
        _step(ax_queue, *_thin(xs, list(s.queued)), r.policy)
        never_queued = never_queued and not any(s.queued)
        frag = [
            100 * f / (up - used) if up > used else 0.0
            for f, up, used in zip(s.fragmented, s.up, s.used, strict=True)
        ]
        _step(ax_frag, *_thin(xs, frag), r.policy)
        if fill:
            xs = [100 * p[0] for p in r.allocation_curve]
            ys = [100 * p[1] for p in r.allocation_curve]
            axes[3].plot(xs, ys, marker="o", label=r.policy)
    ax_util.set_ylabel("GPUs allocated (% of fleet)")
    ax_queue.set_ylabel("GPUs queued (GPUs)")
    ax_frag.set_ylabel("fragmented (% of idle GPUs)")
    if never_queued:
        ax_queue.text(
            0.5,
            0.6,
            "no job waited: the fleet was never the bottleneck",
            transform=ax_queue.transAxes,
            ha="center",
            va="center",
            bbox={"facecolor": "white", "edgecolor": "0.7"},
        )
    ax_queue.set_ylim(bottom=0)
    for ax in (ax_util, ax_queue, ax_frag):
        ax.set_xlabel(f"simulated time ({unit})")
    if fill:
        axes[3].set_xlabel("GPUs asked for by arrived jobs (% of fleet)")
        axes[3].set_ylabel("GPUs allocated (% of fleet)")
    titles = ", ".join(f"{r.policy}: {r.jobs:,} jobs on {r.gpus:,} GPUs" for r in reports)
    fig.suptitle(titles)
    for ax in axes:
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _step(ax: Any, xs: list[float], ys: list[float], label: str) -> None:
    ax.step(xs, ys, where="post", label=label, linewidth=0.8)
