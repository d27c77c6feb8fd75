"""Engine and sessions: SQLite (WAL) by default, PostgreSQL via CORRAL_DATABASE_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

K = TypeVar("K")


IN_LIST_MAX = 500  # ids per IN (...) list: well under any database's bound-parameter limit


def in_chunks(ids: Iterable[K]) -> Iterator[list[K]]:
    """`ids` in lists short enough for one `IN (...)` each."""
    batch: list[K] = []
    for item in ids:
        batch.append(item)
        if len(batch) == IN_LIST_MAX:
            yield batch
            batch = []
    if batch:
        yield batch


def normalize_url(url: str) -> str:
    # Users paste libpq-style URLs; SQLAlchemy needs the driver named to pick psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """An engine; `immediate` makes SQLite take the write lock at BEGIN.

    A deferred SQLite transaction that reads and then writes fails at once with "database is
    locked" when another writer committed in between; BEGIN IMMEDIATE waits its turn instead.
    """
    url = normalize_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Enough pooled connections for every worker thread: an overflow connection is
        # closed on return, and each new one pays for the pragmas below.
        pool: dict[str, Any] = {}
        if path and path != ":memory:":
            pool = {"pool_size": 16, "max_overflow": 16}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is always deferred).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL lets readers go on while the one writer commits; NORMAL sync is durable in WAL mode
    # across a process crash (only an OS crash can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Store:
    """The engine plus a session factory; `transaction()` is the unit of every state change."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, immediate=True)
        # SQLite readers get their own engine so a read never holds the write lock.
        self.read_engine = make_engine(self.url) if is_sqlite(self.url) else self.engine
        self._writes = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(self.read_engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
        # its busy handler (1, 2, 5, ... up to 100 ms) before trying again: under many
        # concurrent writes the lock would sit free while they sleep. Taking turns on a lock
        # of our own first hands it over at once. (An RLock: a transaction opened inside
        # another on the same thread still fails on SQLite's busy timeout, not hangs.)
        self._write_turn: threading.RLock | None = (
            threading.RLock() if is_sqlite(self.url) else None
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self._write_turn is None:
            with self._writes() as session, session.begin():
                yield session
            return
        with self._write_turn, self._writes() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reads() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
