"""The console in-process: the real app (SQLite) and a browser-like client with cookies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import in_process
from support.console import log_in


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    with in_process(f"sqlite:///{tmp_path / 'corral.db'}", tmp_path / "home") as client:
        yield client


@pytest.fixture
def admin(server: TestClient) -> TestClient:
    log_in(server)
    return server
