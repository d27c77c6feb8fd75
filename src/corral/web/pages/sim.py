"""Simulation: the runs `corral sim` saved under the control plane's home (sim/saved.py),
newest first, and a run's panels as `corral sim --plot` draws them.

Who may see: any logged-in viewer. A simulation replays a trace through the scheduler on
a virtual fleet; it holds no workspace's jobs, and its figures help anyone plan. What is
the operator's alone, the paths of the files it read on the operator's machine, shows in
full to cluster admins only (as node addresses do over the API).

Run ids from the URL are looked up among the names listed from the runs directory, never
joined to a path; anything else is "not found".
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.server.api.deps import CP
from corral.server.errors import Invalid, NotFound
from corral.sim.saved import KEEP, BadRun, Listing, RunCache, find_run, list_runs, runs_dir
from corral.web.render import SECURITY_HEADERS, html
from corral.web.session import PREFIX, Viewer, Visitor
from corral.web.views.sim import PANEL_KEYS, detail, panel_data, run_rows

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/sim")
def sim_page(request: Request, who: Viewer, cp: CP) -> Response:
    """The saved runs, and the newest one drawn."""
    started = time.perf_counter()
    listing = list_runs(cp.options.home, _cache(request))
    newest = listing.runs[0].id if listing.runs else None
    return _render(request, who, cp.options.home, listing, newest, started)


@router.get("/sim/{run_id}")
def sim_run(run_id: str, request: Request, who: Viewer, cp: CP) -> Response:
    started = time.perf_counter()
    listing = list_runs(cp.options.home, _cache(request))
    if not any(r.id == run_id for r in listing.runs):
        raise _not_found(run_id, listing)
    return _render(request, who, cp.options.home, listing, run_id, started)


@router.get("/sim/{run_id}/series")
def sim_series(run_id: str, panel: str, request: Request, who: Viewer, cp: CP) -> Response:
    """One panel of a run as chart JSON (views.sim.panel_data)."""
    if panel not in PANEL_KEYS:
        raise Invalid(f"panel: expected one of {', '.join(sorted(PANEL_KEYS))}")
    try:
        run = find_run(cp.options.home, run_id, _cache(request))
    except BadRun as exc:
        raise NotFound(f"simulation run {run_id} cannot be read: {exc}") from None
    if run is None:
        raise _not_found(run_id, None)
    return JSONResponse(panel_data(run, panel), headers=SECURITY_HEADERS)


def _cache(request: Request) -> RunCache:
    """The app's runs already read (a page would otherwise parse every saved file)."""
    cache: RunCache | None = getattr(request.app.state, "sim_runs", None)
    if cache is None:
        cache = request.app.state.sim_runs = RunCache()
    return cache


def _not_found(run_id: str, listing: Listing | None) -> NotFound:
    shown = run_id if len(run_id) <= 80 else run_id[:80] + "…"
    unreadable = listing is not None and any(
        s.startswith(f"{run_id}.json:") for s in listing.skipped
    )
    why = "it cannot be read" if unreadable else f"only the last {KEEP} runs are kept"
    return NotFound(f"no saved simulation run {shown!r} ({why})")


def _render(
    request: Request,
    who: Visitor,
    home: Path,
    listing: Listing,
    selected: str | None,
    started: float,
) -> Response:
    full = who.cluster_admin
    run = next((r for r in listing.runs if r.id == selected), None)
    context = {
        "rows": run_rows(listing.runs, selected, full),
        "skipped": listing.skipped,
        "detail": None if run is None else detail(run, full),
        # Where runs are read from: the server's own path is for a cluster admin.
        "where": str(runs_dir(home)) if full else "$CORRAL_HOME/sim-runs",
        "keep": KEEP,
    }
    return html(request, "sim.html", context, visitor=who, started=started)
