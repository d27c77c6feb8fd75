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


def plot_reports(reports: list[SimReport], path: str | Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'matplotlib>=3.8,<4'") from None
    fill = any(r.allocation_curve for r in reports)
    fig, axes = plt.subplots(4 if fill else 3, 1, figsize=(10, 11 if fill else 9), sharex=False)
    ax_util, ax_queue, ax_frag = axes[0], axes[1], axes[2]
    for r in reports:
        s = r.series
        if s is None or not len(s) or not r.gpus:
            continue
        hours = [t / 3600 for t in s.t]
        _step(ax_util, *_thin(hours, [u / r.gpus for u in s.used]), r.policy)
        _step(ax_queue, *_thin(hours, list(s.queued)), r.policy)
        frag = [
            f / (up - used) if up > used else 0.0
            for f, up, used in zip(s.fragmented, s.up, s.used, strict=True)
        ]
        _step(ax_frag, *_thin(hours, frag), r.policy)
        if fill:
            xs = [p[0] for p in r.allocation_curve]
            ys = [p[1] for p in r.allocation_curve]
            axes[3].plot(xs, ys, marker="o", label=r.policy)
    ax_util.set_ylabel("GPUs allocated (share)")
    ax_queue.set_ylabel("GPUs queued")
    ax_frag.set_ylabel("fragmented share of free GPUs")
    for ax in (ax_util, ax_queue, ax_frag):
        ax.set_xlabel("time (h)")
    if fill:
        axes[3].set_xlabel("arrived GPU demand / capacity")
        axes[3].set_ylabel("allocated / capacity")
    for ax in axes:
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _step(ax: Any, xs: list[float], ys: list[float], label: str) -> None:
    ax.step(xs, ys, where="post", label=label, linewidth=0.8)
