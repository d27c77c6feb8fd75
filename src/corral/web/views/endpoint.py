"""The endpoint page's view models: an EndpointView, its load history and `now` in,
what the template shows out (pure: no I/O, no clock).

The page answers an operator's questions in order: is it serving (state, ready of desired,
why not), is the rollout done (which revision each replica runs), how loaded is it
(requests per second, latency, in flight, replicas over time), and how do I call it (the
URL and a curl line that works as pasted, with the token only where the endpoint asks).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.core.states import EndpointReplicaState
from corral.server.load_history import Sample
from corral.web import links
from corral.wire.api import EndpointReplicaView, EndpointView

# The charts the page draws from the series URL (?chart=...), each one unit; no chart:
# every series at once, requests per second first.
CHARTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "requests": (("requests/s", "req/s", "rps"),),
    "latency": (("p50", "ms", "p50_ms"), ("p99", "ms", "p99_ms")),
    "replicas": (("ready", "replicas", "ready"), ("desired", "replicas", "desired")),
    "inflight": (("in flight", "requests", "in_flight"), ("held", "requests", "held")),
}
CHART_TITLES = {
    "requests": "requests per second",
    "latency": "latency to first byte (ms)",
    "replicas": "replicas: ready and desired",
    "inflight": "requests in flight and held",
}
# Without a load report this recent, the gateway is not reporting (no "0 rps" shown).
REPORT_FRESH_S = 10.0
GATEWAY_VAR = "GATEWAY"


@dataclass(frozen=True)
class ReplicaRow:
    job: str
    job_href: str
    node: str | None
    node_href: str | None
    revision: int
    current: bool  # runs the endpoint's current revision
    state: str
    reason: str | None
    started_for_s: float | None  # how long since it started; None: not started
    ready_for_s: float | None


@dataclass(frozen=True)
class RevisionShare:
    revision: int
    current: bool
    replicas: int
    ready: int


@dataclass(frozen=True)
class Rollout:
    revision: int
    done: bool
    summary: str
    shares: tuple[RevisionShare, ...]


@dataclass(frozen=True)
class LoadNow:
    """The latest sample in words, or why there is none."""

    reported: bool
    rps: str
    p50: str
    p99: str
    in_flight: str
    note: str | None


@dataclass(frozen=True)
class EndpointPage:
    name: str
    workspace: str
    state: str
    reason: str | None
    autoscaler: str | None
    revision: int
    ready: int
    desired: int
    min_replicas: int
    max_replicas: int
    target_in_flight: str
    scale_rule: str  # how the autoscaler is told to scale it, in words
    public: bool
    url: str  # the full URL, or the path under $GATEWAY when the server does not know it
    url_known: bool
    curl: str
    replicas: tuple[ReplicaRow, ...]
    rollout: Rollout
    load: LoadNow
    created_s_ago: float
    updated_s_ago: float
    base: str  # this page's path: the fragment and series URLs hang off it


def curl_line(url: str, public: bool, url_known: bool) -> str:
    """A curl line that works as pasted: the token from $CORRAL_TOKEN unless the endpoint
    is public; the gateway from $GATEWAY when this server does not know its address."""
    target = shlex.quote(url) if url_known else f'"${GATEWAY_VAR}"{shlex.quote(url)}'
    auth = "" if public else '-H "Authorization: Bearer $CORRAL_TOKEN" '
    return f"curl {auth}{target}"


def _replicas(n: int) -> str:
    return f"{n} replica" + ("" if n == 1 else "s")


def scale_rule(view: EndpointView) -> str:
    low, high = view.min_replicas, view.max_replicas
    if low == high:
        return f"Fixed at {_replicas(low)}: no autoscaling (max_replicas is min_replicas)."
    rule = (
        f"Aims for {view.spec.target_in_flight:g} requests in flight per replica, "
        f"between {low} and {_replicas(high)}"
    )
    if low == 0:
        rule += f"; to zero after {view.spec.idle_to_zero_s:g} s without a request"
    return rule + "."


def replica_row(r: EndpointReplicaView, view: EndpointView, now: float) -> ReplicaRow:
    return ReplicaRow(
        job=r.job,
        job_href=links.job_page(view.workspace, r.job),
        node=r.node,
        node_href=None if r.node is None else links.node_page(r.node),
        revision=r.revision,
        current=r.revision == view.revision,
        state=str(r.state),
        reason=r.reason,
        started_for_s=None if r.started_at is None else max(0.0, now - r.started_at),
        ready_for_s=None
        if r.ready_at is None or r.state != EndpointReplicaState.READY
        else max(0.0, now - r.ready_at),
    )


def rollout(view: EndpointView) -> Rollout:
    """Which revision the replicas run against the endpoint's, in one line and by revision."""
    counts: dict[int, list[int]] = {}
    for r in view.replicas:
        share = counts.setdefault(r.revision, [0, 0])
        share[0] += 1
        share[1] += r.state == EndpointReplicaState.READY
    counts.setdefault(view.revision, [0, 0])
    shares = tuple(
        RevisionShare(rev, rev == view.revision, n, ready)
        for rev, (n, ready) in sorted(counts.items(), reverse=True)
    )
    current = counts[view.revision]
    older = sum(s.replicas for s in shares if not s.current)
    done = older == 0
    if not view.replicas:
        summary = f"revision {view.revision}: no replica runs now"
    elif done:
        summary = f"every replica runs revision {view.revision} ({current[1]} ready)"
    else:
        summary = (
            f"rolling out revision {view.revision}: {current[0]} of "
            f"{current[0] + older} replicas on it ({current[1]} ready), "
            f"{older} on older revisions still serving until it is ready"
        )
    return Rollout(view.revision, done, summary, shares)


def _num(x: float | None, unit: str = "", digits: int = 1) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:,.{digits}f}{unit}"


def load_now(samples: Sequence[Sample], now: float) -> LoadNow:
    last = samples[-1] if samples else None
    if last is None or now - last.t > REPORT_FRESH_S:
        note = (
            "no gateway has reported this endpoint's load yet"
            if last is None
            else f"no gateway has reported for {now - last.t:.0f} s"
        )
        return LoadNow(False, "—", "—", "—", "—", note)
    return LoadNow(
        reported=True,
        rps=_num(last.rps),
        p50=_num(last.p50_ms, " ms"),
        p99=_num(last.p99_ms, " ms"),
        in_flight=_num(last.in_flight) + (f" (+{last.held} held)" if last.held else ""),
        note=None,
    )


def endpoint_page(
    view: EndpointView, gateway_url: str | None, samples: Sequence[Sample], now: float
) -> EndpointPage:
    url_known = gateway_url is not None
    url = f"{gateway_url.rstrip('/')}{view.path}" if gateway_url is not None else view.path
    public = view.spec.auth == "public"
    return EndpointPage(
        name=view.name,
        workspace=view.workspace,
        state=str(view.state),
        reason=view.reason if view.reason and view.reason != view.state else None,
        autoscaler=view.autoscaler,
        revision=view.revision,
        ready=view.ready_replicas,
        desired=view.desired_replicas,
        min_replicas=view.min_replicas,
        max_replicas=view.max_replicas,
        target_in_flight=f"{view.spec.target_in_flight:g}",
        scale_rule=scale_rule(view),
        public=public,
        url=url,
        url_known=url_known,
        curl=curl_line(url, public, url_known),
        replicas=tuple(replica_row(r, view, now) for r in view.replicas),
        rollout=rollout(view),
        load=load_now(samples, now),
        created_s_ago=max(0.0, now - view.created_at),
        updated_s_ago=max(0.0, now - view.updated_at),
        base=links.endpoint_page(view.workspace, view.name),
    )


def chart_series(samples: Sequence[Sample], chart: str | None) -> dict[str, Any]:
    """`{"x": [unix s], "series": [{"label", "unit", "values"}]}` (console.js draws it) for
    one chart of CHARTS, or every series when `chart` is None."""
    wanted = CHARTS[chart] if chart is not None else tuple(s for c in CHARTS.values() for s in c)
    return {
        "x": [round(s.t, 3) for s in samples],
        "series": [
            {"label": label, "unit": unit, "values": [getattr(s, column) for s in samples]}
            for label, unit, column in wanted
        ],
    }
