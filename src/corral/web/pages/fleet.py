"""The fleet page: every GPU as a cell, nodes grouped provider → region → zone → rack, the
totals, and a grid fragment its page polls. Filters (GPU model, condition) are query
parameters, so a filtered view is a URL to keep or share."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from corral.core.states import NodeCondition
from corral.server.api.deps import CP
from corral.server.errors import Invalid
from corral.server.services.fleet_view import fleet as fleet_facts
from corral.web.render import html
from corral.web.session import PREFIX, Viewer
from corral.web.views import fleet as view

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def filters(model: str | None, condition: str | None) -> view.Filters:
    """The query's filters; an empty field (the form's 'any') is no filter."""
    wanted: NodeCondition | None = None
    if condition:
        try:
            wanted = NodeCondition(condition)
        except ValueError:
            choices = ", ".join(c.value for c in NodeCondition)
            message = f"condition '{condition}' is not one of {choices}"
            raise Invalid(message, [{"path": "condition", "message": message}]) from None
    return view.Filters(model=model or None, condition=wanted)


def build(cp: CP, who: Viewer, model: str | None, condition: str | None) -> view.Fleet:
    wanted = filters(model, condition)
    with cp.store.read() as session:
        facts = fleet_facts(session, who.principal, cp.clock.now(), cp.catalog)
    return view.fleet(facts, wanted, who.can_act_on_nodes)


@router.get("/fleet")
def fleet_page(
    request: Request,
    who: Viewer,
    cp: CP,
    model: str | None = None,
    condition: str | None = None,
) -> HTMLResponse:
    started = time.perf_counter()
    fleet = build(cp, who, model, condition)
    return html(request, "fleet.html", {"fleet": fleet}, visitor=who, started=started)


@router.get("/fleet/grid")
def fleet_grid(
    request: Request,
    who: Viewer,
    cp: CP,
    model: str | None = None,
    condition: str | None = None,
) -> HTMLResponse:
    """The live part of the page (totals and cells), polled every few seconds."""
    started = time.perf_counter()
    fleet = build(cp, who, model, condition)
    return html(request, "_fleet_grid.html", {"fleet": fleet}, visitor=who, started=started)
