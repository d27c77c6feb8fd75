"""How endpoints look in a terminal: the `endpoint ls` table and the `endpoint get` page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from corral.cli.output import age, duration, esc, styled, table

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from corral.spec.endpoint import EndpointSpec
    from corral.wire.api import EndpointView

# Colour is decoration only: every state is also written out as a word.
ENDPOINT_STATE_STYLE = {
    "starting": "cyan",
    "ready": "green",
    "scaling": "blue",
    "updating": "blue",
    "scaled-to-zero": "dim",
    "deleting": "yellow",
}
ENDPOINT_REPLICA_STYLE = {
    "starting": "cyan",
    "ready": "green",
    "unready": "red",
    "draining": "yellow",
}


def address(view: EndpointView) -> str:
    """The full URL when the server knows its gateway, else the path on any gateway."""
    return view.url or view.path


def state_text(view: EndpointView) -> str:
    return styled(view.state, ENDPOINT_STATE_STYLE.get(view.state))


def endpoints_table(views: list[EndpointView]) -> RenderableType:
    t = table("NAME", "STATE", "READY/DESIRED", "MIN..MAX", "URL", "REASON")
    for view in views:
        t.add_row(
            esc(view.name),
            state_text(view),
            f"{view.ready_replicas}/{view.desired_replicas}",
            f"{view.min_replicas}..{view.max_replicas}",
            esc(address(view)),
            esc(_reason(view) or ""),
        )
    return t


def _reason(view: EndpointView) -> str | None:
    # "starting" next to state `starting` says nothing twice.
    return None if view.reason == view.state else view.reason


def resources_text(spec: EndpointSpec) -> str:
    from corral.cli.jobview import per_replica_text

    return per_replica_text(spec.resources) + " per replica"


def scaling_text(view: EndpointView) -> str:
    spec = view.spec
    parts = [f"{view.min_replicas}..{view.max_replicas} replicas"]
    if view.max_replicas > view.min_replicas:
        parts.append(f"target {spec.target_in_flight:g} requests in flight per replica")
    if view.min_replicas == 0:
        parts.append(f"to zero after {duration(spec.idle_to_zero_s)} idle")
    return " · ".join(parts)


def auth_text(view: EndpointView) -> str:
    if view.spec.auth == "public":
        return "public: anyone who reaches the gateway"
    return f"a token of workspace {view.workspace} (Authorization: Bearer TOKEN)"


def print_endpoint(console: Console, view: EndpointView, now: float | None = None) -> None:
    from rich.table import Table

    now = time.time() if now is None else now
    spec = view.spec
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("name", esc(view.name))
    grid.add_row("workspace", esc(view.workspace))
    grid.add_row("state", state_text(view))
    reason = _reason(view)
    if reason:
        grid.add_row("reason", esc(reason))
    if view.autoscaler:
        grid.add_row("autoscaler", f"[dim]{esc(view.autoscaler)}[/]")
    grid.add_row("url", esc(address(view)))
    grid.add_row(
        "replicas",
        f"{view.ready_replicas} ready of {view.desired_replicas} desired · "
        f"revision {view.revision}",
    )
    grid.add_row("scaling", esc(scaling_text(view)))
    grid.add_row("command", esc(spec.display_command()))
    grid.add_row("resources", esc(resources_text(spec)))
    r = spec.readiness
    grid.add_row("readiness", esc(f"GET {r.path} answers 2xx within {duration(r.timeout)}"))
    grid.add_row("auth", esc(auth_text(view)))
    grid.add_row(
        "time", f"created {age(view.created_at, now)} · updated {age(view.updated_at, now)}"
    )
    console.print(grid)
    console.print()
    if not view.replicas:
        console.print("[dim]no replicas[/]")
        return
    t = table("JOB", "REV", "STATE", "NODE", "URL", "READY SINCE", "REASON")
    for replica in view.replicas:
        ready_since = age(replica.ready_at, now) if replica.state == "ready" else "-"
        t.add_row(
            esc(replica.job),
            str(replica.revision),
            styled(replica.state, ENDPOINT_REPLICA_STYLE.get(replica.state)),
            esc(replica.node or "-"),
            esc(replica.url or "-"),
            ready_since,
            # Why it does not serve: the scheduler's pending reason or its probe's words.
            esc(replica.reason or "-"),
        )
    console.print(t)
