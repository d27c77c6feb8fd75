"""The Workloads page's view model: the page's query read and checked, and each listed job,
endpoint or pod turned into one row. Pure: no I/O, no clock (`now` is handed in).

A bad query answers in words naming the field (a 422 page), never a traceback: the page's
parameters are read here rather than by FastAPI's validation, whose errors are the API's
JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from corral.server.errors import Invalid
from corral.server.services.pages import DEFAULT_LIMIT
from corral.server.services.workloads_view import KINDS, STATES, Listed, WorkloadKind
from corral.spec.resources import GpuRequest
from corral.web.links import endpoint_page, job_page
from corral.web.session import PREFIX
from corral.wire.api import EndpointView, JobView
from corral.wire.pods import PodView

ALL = "all"
MAX_LIMIT = 200  # rows on one page
REASON_CHARS = 140
NODES_SHOWN = 3
CURSOR_CHARS = 512
# States in the order a person scans them: waiting, live, ending, ended.
STATE_ORDER = (
    "pending",
    "starting",
    "running",
    "ready",
    "scaling",
    "updating",
    "scaled-to-zero",
    "cancelling",
    "stopping",
    "deleting",
    "stopped",
    "succeeded",
    "failed",
    "cancelled",
)


@dataclass(frozen=True)
class Query:
    kind: str  # ALL or one of KINDS
    state: str | None
    workspace: str | None  # None: every workspace the token sees
    cursor: str | None
    limit: int

    @property
    def kinds(self) -> frozenset[WorkloadKind]:
        return (
            frozenset(KINDS) if self.kind == ALL else frozenset(k for k in KINDS if k == self.kind)
        )

    def url(self, cursor: str | None = None) -> str:
        """This page's URL with the same filters, at `cursor` (None: the first page)."""
        params: list[tuple[str, str]] = [("kind", self.kind)]
        if self.state:
            params.append(("state", self.state))
        if self.workspace:
            params.append(("workspace", self.workspace))
        if self.limit != DEFAULT_LIMIT:
            params.append(("limit", str(self.limit)))
        if cursor:
            params.append(("cursor", cursor))
        return f"{PREFIX}/workloads?{urlencode(params)}"


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", [{"path": field, "message": message}])


def read_query(
    kind: str | None,
    state: str | None,
    workspace: str | None,
    cursor: str | None,
    limit: str | None,
) -> Query:
    """The page's parameters, checked; an Invalid naming the field otherwise. Empty values
    (a form's "any") mean no filter."""
    kind = kind or ALL
    if kind not in (ALL, *KINDS):
        raise _invalid("kind", f"expected one of {', '.join((ALL, *KINDS))}; got {kind!r}")
    state = state or None
    if state is not None:
        kinds = [k for k in KINDS if kind in (ALL, k)]
        if not any(state in STATES[k] for k in kinds):
            choices = ", ".join(state_choices(kind))
            what = "workloads" if kind == ALL else f"{kind}s"
            raise _invalid("state", f"{what} are never {state!r}; their states: {choices}")
    rows = DEFAULT_LIMIT
    if limit:
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIMIT:
            raise _invalid("limit", f"rows per page, 1..{MAX_LIMIT}; got {limit!r}")
        rows = int(limit)
    if cursor is not None and len(cursor) > CURSOR_CHARS:
        raise _invalid("cursor", "not a cursor this list gave out: follow the page's links")
    return Query(kind, state, workspace or None, cursor or None, rows)


def state_choices(kind: str) -> list[str]:
    """The states the kind's workloads can be in (every kind's for ALL), in STATE_ORDER."""
    have = {s for k in KINDS if kind in (ALL, k) for s in STATES[k]}
    return [s for s in STATE_ORDER if s in have] + sorted(have - set(STATE_ORDER))


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    href: str | None  # its own page; None where there is none yet (pods)
    workspace: str
    state: str
    gpus: str  # "8 x H100" (a multiplication sign), "—"
    gpus_title: str  # how that adds up: "2 replicas x 4 H100"
    where: str  # node names, the first few
    where_title: str  # all of them
    age_s: float
    reason: str  # clipped
    reason_full: str


def rows(items: Sequence[Listed], now: float) -> list[Row]:
    return [_row(item, now) for item in items]


def _row(item: Listed, now: float) -> Row:
    view = item.view
    if isinstance(view, JobView):
        replicas = len(view.replicas) or view.spec.replicas
        nodes = [r.node for r in view.replicas if r.node]
        return _made(
            "job",
            view.name,
            view.workspace,
            job_page(view.workspace, view.name),
            view.state,
            view.spec.resources.gpus,
            replicas,
            nodes,
            now - view.submitted_at,
            view.reason,
        )
    if isinstance(view, EndpointView):
        nodes = [r.node for r in view.replicas if r.node]
        return _made(
            "endpoint",
            view.name,
            view.workspace,
            endpoint_page(view.workspace, view.name),
            view.state,
            view.spec.resources.gpus,
            view.desired_replicas,
            nodes,
            now - view.created_at,
            view.reason,
        )
    assert isinstance(view, PodView)
    why = view.reason or (view.stop_reason if view.state in ("stopped", "stopping") else None)
    return _made(
        "pod",
        view.name,
        view.workspace,
        None,
        view.state,
        view.spec.resources.gpus,
        1,
        [view.node] if view.node else [],
        now - view.created_at,
        why,
    )


def _made(
    kind: str,
    name: str,
    workspace: str,
    href: str | None,
    state: str,
    gpu: GpuRequest,
    replicas: int,
    nodes: list[str],
    age_s: float,
    reason: str | None,
) -> Row:
    gpus, gpus_title = gpu_words(gpu, replicas)
    unique = list(dict.fromkeys(nodes))
    where = ", ".join(unique[:NODES_SHOWN])
    if len(unique) > NODES_SHOWN:
        where += f" +{len(unique) - NODES_SHOWN}"
    full = reason or ""
    return Row(
        kind=kind,
        name=name,
        href=href,
        workspace=workspace,
        state=str(state),
        gpus=gpus,
        gpus_title=gpus_title,
        where=where or "—",
        where_title=", ".join(unique),
        age_s=age_s,
        reason=clip(full, REASON_CHARS),
        reason_full=full,
    )


def gpu_words(gpu: GpuRequest, replicas: int) -> tuple[str, str]:
    """("8 x H100", "2 replicas x 4 H100") with a multiplication sign; ("—", "no GPUs")
    without GPUs."""
    if gpu.count == 0:
        return "—", "no GPUs"
    model = gpu.type or "any GPU"
    total = gpu.count * max(replicas, 1)
    each = "1 replica" if replicas == 1 else f"{replicas} replicas"
    return f"{total} × {model}", f"{each} × {gpu.count} {model}"


def clip(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    selected: bool


@dataclass(frozen=True)
class Filters:
    kinds: list[Choice]
    states: list[Choice]
    workspaces: list[Choice]  # only those the token may read


def filters(query: Query, workspaces: Sequence[str], cluster_wide: bool) -> Filters:
    """The filter form's choices; `workspaces` are those the token may read, and only a
    cluster-wide token gets "every workspace"."""
    kinds = [Choice(ALL, "all kinds", query.kind == ALL)] + [
        Choice(k, f"{k}s", query.kind == k) for k in KINDS
    ]
    states = [Choice("", "any state", query.state is None)] + [
        Choice(s, s, query.state == s) for s in state_choices(query.kind)
    ]
    spaces = [Choice("", "every workspace", query.workspace is None)] if cluster_wide else []
    spaces += [Choice(w, w, query.workspace == w or not cluster_wide) for w in workspaces]
    return Filters(kinds, states, spaces)
