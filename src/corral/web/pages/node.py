"""The node page (its GPUs' signals, health and event history, what runs there) and the
node actions: cordon, uncordon, drain, for cluster admins, done as `/v1/nodes` does them.

An action answers with what it changed, re-rendered: the fleet's card of the node
(`part=card`, the default) or the node page's panel (`part=panel`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from corral.server.api.deps import CP, retry_stale
from corral.server.runtime import ControlPlane
from corral.server.services import node_ops
from corral.server.services.effects import Effects
from corral.server.services.fleet_view import fleet as fleet_facts
from corral.server.services.node_detail import node_detail
from corral.web.render import html
from corral.web.session import PREFIX, Actor, Viewer, Visitor
from corral.web.views.fleet import node_card
from corral.web.views.node import node_page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

Part = Literal["card", "panel"]
PANEL_REFRESH_S = 5


def _card(
    request: Request, cp: ControlPlane, who: Visitor, name: str, outcome: str | None, started: float
) -> HTMLResponse:
    with cp.store.read() as session:
        (facts,) = fleet_facts(session, who.principal, cp.clock.now(), cp.catalog, node=name)
    context = {"node": node_card(facts), "can_act": who.can_act_on_nodes, "outcome": outcome}
    return html(request, "_node_card.html", context, visitor=who, started=started)


def _page(
    request: Request,
    cp: ControlPlane,
    who: Visitor,
    name: str,
    template: str,
    outcome: str | None,
    started: float,
) -> HTMLResponse:
    now = cp.clock.now()
    with cp.store.read() as session:
        detail = node_detail(session, who.principal, name, now)
        (facts,) = fleet_facts(session, who.principal, now, cp.catalog, node=name)
    page = node_page(detail, facts, now, who.can_act_on_nodes)
    context = {"page": page, "outcome": outcome, "refresh_s": PANEL_REFRESH_S}
    return html(request, template, context, visitor=who, started=started)


@router.get("/nodes/{name}")
def node(request: Request, name: str, who: Viewer, cp: CP) -> HTMLResponse:
    started = time.perf_counter()
    return _page(request, cp, who, name, "node.html", None, started)


@router.get("/nodes/{name}/panel")
def node_panel(request: Request, name: str, who: Viewer, cp: CP) -> HTMLResponse:
    """The node page's live part, polled."""
    started = time.perf_counter()
    return _page(request, cp, who, name, "_node_panel.html", None, started)


@router.get("/nodes/{name}/card")
def node_card_fragment(request: Request, name: str, who: Viewer, cp: CP) -> HTMLResponse:
    """The node's card as the fleet shows it."""
    started = time.perf_counter()
    return _card(request, cp, who, name, None, started)


def _act(
    request: Request,
    cp: ControlPlane,
    who: Visitor,
    name: str,
    part: Part,
    write: Callable[[], tuple[str, Effects | None]],
) -> HTMLResponse:
    started = time.perf_counter()
    outcome, effects = retry_stale(write)
    if effects is not None:
        cp.apply(effects)
    if part == "card":
        return _card(request, cp, who, name, outcome, started)
    return _page(request, cp, who, name, "_node_panel.html", outcome, started)


@router.post("/nodes/{name}/cordon")
def cordon(request: Request, name: str, who: Actor, cp: CP, part: Part = "card") -> HTMLResponse:
    def write() -> tuple[str, Effects | None]:
        with cp.store.transaction() as session:
            _, changed = node_ops.cordon(session, who.principal, name, cp.clock.now())
        return (f"node '{name}' cordoned" if changed else f"node '{name}' was cordoned"), None

    return _act(request, cp, who, name, part, write)


@router.post("/nodes/{name}/uncordon")
def uncordon(request: Request, name: str, who: Actor, cp: CP, part: Part = "card") -> HTMLResponse:
    changed = False

    def write() -> tuple[str, Effects | None]:
        nonlocal changed
        with cp.store.transaction() as session:
            _, changed = node_ops.uncordon(session, who.principal, name, cp.clock.now())
        done = "takes work again" if changed else "was not cordoned"
        return f"node '{name}' {done}", None

    answer = _act(request, cp, who, name, part, write)
    if changed:
        cp.wake_scheduler()  # what waited for this node is placed now (as /v1/nodes does)
    return answer


@router.post("/nodes/{name}/drain")
def drain(request: Request, name: str, who: Actor, cp: CP, part: Part = "card") -> HTMLResponse:
    def write() -> tuple[str, Effects | None]:
        with cp.store.transaction() as session:
            _, effects, outcome = node_ops.drain(session, who.principal, name, cp.clock.now())
        return outcome, effects

    return _act(request, cp, who, name, part, write)
