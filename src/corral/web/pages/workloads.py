"""/ui/workloads: jobs, endpoints and dev pods in one list, filtered and paged on the server.

Scoped as `GET /v1/jobs` is: a cluster admin reads any workspace or all of them; a
workspace's token reads its own, and naming another answers 403 (the same check,
auth.check_workspace_access), never that workspace's rows.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from corral.server.api.deps import CP
from corral.server.auth import check_workspace_access
from corral.server.errors import NotFound
from corral.server.services.identity import workspace_by_name
from corral.server.services.pages import DEFAULT_LIMIT, PageRequest
from corral.server.services.workloads_view import WorkloadFilter, list_workloads
from corral.server.store.tables import Workspace
from corral.web.render import html
from corral.web.session import PREFIX, Viewer
from corral.web.views import workloads as view

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/workloads")
def workloads_page(
    request: Request,
    who: Viewer,
    cp: CP,
    kind: str | None = None,
    state: str | None = None,
    workspace: str | None = None,
    cursor: str | None = None,
    limit: str | None = None,
) -> HTMLResponse:
    started = time.perf_counter()
    query = view.read_query(kind, state, workspace, cursor, limit)
    principal = who.principal
    # A workspace's token reads its own workspace only, whether or not it names it.
    named = query.workspace or (None if principal.cluster_admin else principal.workspace or "")
    if named is not None:
        check_workspace_access(principal, named, "viewer")
    now = cp.clock.now()
    with cp.store.read() as session:
        scope: list[Workspace] | None = None
        if named is not None:
            row = workspace_by_name(session, named)
            if row is None:
                raise NotFound(f"workspace '{named}' not found")
            scope = [row]
        which = WorkloadFilter(scope, query.kinds, query.state)
        page = list_workloads(session, which, PageRequest(query.limit, query.cursor), now)
        choices = (
            list(session.scalars(select(Workspace.name).order_by(Workspace.name)))
            if principal.cluster_admin
            else [named or ""]
        )
    context = {
        "query": query,
        "rows": view.rows(page.items, now),
        "filters": view.filters(query, choices, principal.cluster_admin),
        "next_url": query.url(page.next_cursor) if page.next_cursor else None,
        "first_url": query.url() if query.cursor else None,
        "default_limit": DEFAULT_LIMIT,
    }
    return html(request, "workloads.html", context, visitor=who, started=started)
