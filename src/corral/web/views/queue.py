"""The Queue page's view model: the head of the pending queue in scheduling order, and
quota use per workspace. Pure: no I/O, no clock (`now` is handed in).

Another workspace's jobs come from the service with their place in line only
(services/queue_view.py); here consecutive ones fold into one line ("3 jobs of other
workspaces"), so a workspace sees how much waits ahead of its own work and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.core.priorities import class_name
from corral.server.services.queue_view import UNGUARANTEED, QueueFacts, QuotaUse, Waiting
from corral.web.links import workload_page
from corral.web.views.workloads import clip

REASON_CHARS = 160
ANY_MODEL = "*"


@dataclass(frozen=True)
class Line:
    positions: str  # "3", or "4-9" (an en dash) for folded lines
    others: int  # > 0: this many jobs of other workspaces, nothing more is known
    kind: str = ""
    name: str = ""
    href: str | None = None
    workspace: str = ""
    job: str = ""  # the job's own name, where the line names its endpoint or pod
    priority: str = ""
    gpus: str = ""
    waited_s: float = 0.0
    reason: str = ""
    reason_full: str = ""
    status: str = "waiting"  # waiting | fits (starts at the next round) | never (as asked)


def lines(waiting: Sequence[Waiting], now: float) -> list[Line]:
    out: list[Line] = []
    run: list[Waiting] = []

    def fold() -> None:
        if run:
            first, last = run[0].position, run[-1].position
            where = str(first) if first == last else f"{first}–{last}"
            out.append(Line(positions=where, others=len(run)))
            run.clear()

    for w in waiting:
        if w.hidden:
            run.append(w)
            continue
        fold()
        out.append(_line(w, now))
    fold()
    return out


def _line(w: Waiting, now: float) -> Line:
    href = workload_page(w.kind, w.workspace, w.workload)
    if w.gpus:
        total = w.gpus * w.replicas
        gpus = f"{total} × {w.gpu_type or 'any GPU'}"
    else:
        gpus = "—"
    if w.fits_now:
        reason = "fits now: starts at the scheduler's next round"
        status = "fits"
    else:
        reason = w.reason or "waiting for the scheduler's next round"
        status = "never" if w.never_fits else "waiting"
    return Line(
        positions=str(w.position),
        others=0,
        kind=w.kind,
        name=w.workload,
        href=href,
        workspace=w.workspace,
        job=w.name if w.name != w.workload else "",
        priority=class_name(w.priority) or str(w.priority),
        gpus=gpus,
        waited_s=now - w.submitted_at,
        reason=clip(reason, REASON_CHARS),
        reason_full=reason,
        status=status,
    )


@dataclass(frozen=True)
class QuotaRow:
    workspace: str
    what: str  # "H100", "any model", "no guarantee (H100)"
    guaranteed: int
    used: int
    borrowed: int
    used_pct: float  # bar widths, of max(guaranteed, used)
    borrowed_pct: float
    title: str

    @property
    def bar(self) -> bool:
        """Whether a bar says anything: against a guarantee, or borrowed GPUs."""
        return self.guaranteed > 0 or self.borrowed > 0


def quota_rows(quotas: Sequence[QuotaUse], quotas_set: bool = True) -> list[QuotaRow]:
    """quotas_set False: no workspace has a guarantee, so a row is just GPUs in use."""
    out = []
    for q in quotas:
        if q.key == UNGUARANTEED:
            models = ", ".join(q.models) or "GPUs"
            what = f"no guarantee ({models})" if quotas_set else models
        elif q.key == ANY_MODEL:
            what = "any model"
        else:
            what = q.key
        scale = max(q.guaranteed, q.used, 1)
        borrowed = min(q.borrowed, q.used)
        title = f"{q.used} in use of {q.guaranteed} guaranteed"
        if borrowed:
            title += f"; {borrowed} borrowed (reclaimable)"
        out.append(
            QuotaRow(
                workspace=q.workspace,
                what=what,
                guaranteed=q.guaranteed,
                used=q.used,
                borrowed=borrowed,
                used_pct=round(100 * (q.used - borrowed) / scale, 1),
                borrowed_pct=round(100 * borrowed / scale, 1),
                title=title,
            )
        )
    return out


@dataclass(frozen=True)
class QueuePage:
    lines: list[Line]
    pending: int  # in all, every workspace
    mine: int  # the visible workspaces'
    further: int  # pending beyond the lines shown
    quotas: list[QuotaRow]
    quotas_set: bool
    cluster_wide: bool


def page(facts: QueueFacts, now: float, cluster_wide: bool) -> QueuePage:
    return QueuePage(
        lines=lines(facts.waiting, now),
        pending=facts.pending,
        mine=facts.mine,
        further=max(0, facts.pending - len(facts.waiting)),
        quotas=quota_rows(facts.quotas, facts.quotas_set),
        quotas_set=facts.quotas_set,
        cluster_wide=cluster_wide,
    )
