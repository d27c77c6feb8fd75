"""The console in-process: `server` (tests/support/cli.py: the real app on SQLite, as a
TestClient that keeps cookies like a browser) and `admin`, the same logged in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support.console import log_in


@pytest.fixture
def admin(server: TestClient) -> TestClient:
    log_in(server)
    return server
