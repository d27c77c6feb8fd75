"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from support.postgres import temporary_postgres

# `server` and `cli`: the CLI against the real app in-process, for any test.
pytest_plugins = ["support.cli"]


@pytest.fixture(autouse=True)
def _cwd_outside_the_repository(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `job run` and `pod create` send the current directory when it is a project (issue 14):
    # run from the repository, every test's CLI call would upload the repository.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # Nor in the home of whoever runs the tests: a command that keeps something under
    # $CORRAL_HOME (`corral sim` keeps its runs) keeps it in a directory of this test's.
    if not os.environ.get("CORRAL_HOME"):
        monkeypatch.setenv("CORRAL_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL (a fresh database each time)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corral.db'}"
        return
    server: str = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
