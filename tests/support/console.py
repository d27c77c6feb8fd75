"""The console in tests: logging a client in, in-process or in a browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from corral.wire.api import GpuView
from support.app import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# `log_in(token=ADMIN, start="/ui/fleet")` in tests/e2e: a logged-in Playwright page.
LogIn = Callable[..., Any]


def log_in(client: TestClient, token: str = ADMIN_TOKEN) -> str:
    """Log `client` in with `token` through the login form; the page's CSRF token."""
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/fleet"})
    assert answer.status_code == 200, answer.text
    return csrf_of(answer.text)


def csrf_of(page: str) -> str:
    found = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def new_token(client: TestClient, role: str, workspace: str) -> str:
    """A new API token of `role` in `workspace`, made by the cluster admin."""
    r = client.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def gpu_view(index: int, **fields: Any) -> GpuView:
    """A healthy, unallocated H100 as the API shows it; `fields` override."""
    values: dict[str, Any] = {
        "index": index,
        "model": "H100",
        "memory_mb": 81920,
        "uuid": f"GPU-{index}",
        "healthy": True,
        "allocated": False,
        "health": "healthy",
        **fields,
    }
    return GpuView(**values)
