"""The console's page addresses, built in one place: names are quoted as path segments."""

from __future__ import annotations

from urllib.parse import quote

from corral.web.session import PREFIX

# A workload kind and the page that shows it (a pod has none yet).
PAGES = {"job": "jobs", "endpoint": "endpoints"}


def _segment(value: str) -> str:
    return quote(value, safe="")


def node_page(name: str) -> str:
    return f"{PREFIX}/nodes/{_segment(name)}"


def job_page(workspace: str, name: str) -> str:
    return f"{PREFIX}/jobs/{_segment(workspace)}/{_segment(name)}"


def endpoint_page(workspace: str, name: str) -> str:
    return f"{PREFIX}/endpoints/{_segment(workspace)}/{_segment(name)}"


def workload_page(kind: str, workspace: str, name: str) -> str | None:
    """The page of a job or an endpoint; None for a kind with no page."""
    page = PAGES.get(kind)
    if page is None:
        return None
    return f"{PREFIX}/{page}/{_segment(workspace)}/{_segment(name)}"
