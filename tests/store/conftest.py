"""The store fixture: a migrated database with the default workspace and first tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.server.services.identity import bootstrap
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(database_url)
    upgrade(s.engine)
    bootstrap(s, 1000.0, tmp_path, "crl_admin", "crj_join")
    yield s
    s.close()
