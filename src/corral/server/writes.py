"""Group commit: many callers' small writes in one transaction.

Job submissions and the agents' reports arrive by the hundred a second, each a write of a
few rows. One transaction each would pay a thread hop, BEGIN, COMMIT (an fsync point) and
the wait for SQLite's single write lock every time. Instead each caller hands over a
function of the session and awaits its result; whatever has queued up meanwhile is run in
one transaction; when one of them fails (a name taken, a stale row), the batch runs again
with each function in a SAVEPOINT of its own, so that the error rolls back only its own
caller's writes; should the shared commit itself fail, each runs in a transaction of its
own. So a function may run more than once: it must change nothing but the session. A
caller's result is returned only after the commit: nothing is acknowledged unstored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from corral.server.store.db import Store

T = TypeVar("T")
log = logging.getLogger("corral.server.writes")
MAX_BATCH = 256  # bounds one transaction's length, and so every other writer's wait


# Loads what a batch's writes will read, in one query for all of them; returns the objects,
# which are held while the batch runs (the session's identity map holds them weakly).
Warm = Callable[[Session, list[Any]], Any]


@dataclass
class _Write:
    fn: Callable[[Session], Any]
    future: asyncio.Future[Any]
    warm: tuple[Warm, Any] | None = None


class GroupCommit:
    """Runs session functions from the event loop, batched into shared transactions."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[_Write] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # transactions committed, and writes in them: for tests and metrics
        self.writes = 0

    async def run(self, fn: Callable[[Session], T], warm: tuple[Warm, Any] | None = None) -> T:
        """`fn(session)`'s result once its transaction committed; its exception otherwise.

        `warm`, (function, key): the batch first calls each function once with the keys of
        all its writes (say, to load every row they will get by primary key at once).
        """
        loop = asyncio.get_running_loop()
        write = _Write(fn, loop.create_future(), warm)
        if self._loop is not loop:  # a new event loop: writes queued on an old one are moot
            self._queue = [w for w in self._queue if w.future.get_loop() is loop]
        self._queue.append(write)
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._drain(), name="group-commit")
        result: T = await write.future
        return result

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                outcomes = await asyncio.to_thread(self._commit, batch)
            except BaseException:
                for w in batch:  # cancelled (shutdown): nobody's write is known to stand
                    w.future.cancel()
                raise
            for w, (ok, value) in zip(batch, outcomes, strict=True):
                if w.future.done():  # its caller went away (a dropped request)
                    continue
                if ok:
                    w.future.set_result(value)
                else:
                    w.future.set_exception(value)

    def _commit(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        fns = [w.fn for w in batch]
        # Optimistic: the whole batch in one transaction. If any write fails, that
        # transaction is rolled back and the batch runs again with each write in a
        # SAVEPOINT of its own, so that only the failing one is lost. Errors are rare (a
        # taken name, a stale row), and a savepoint per write costs two statements.
        if len(fns) > 1:
            try:
                with self.store.transaction() as session:
                    held = _warm(session, batch)
                    results = [fn(session) for fn in fns]
                    del held
            except Exception:
                pass
            else:
                self._count(len(fns))
                return [(True, r) for r in results]
        if len(fns) > 1:
            try:
                outcomes: list[tuple[bool, Any]] = []
                with self.store.transaction() as session:
                    for fn in fns:
                        try:
                            with session.begin_nested():
                                result = fn(session)
                        except Exception as exc:
                            outcomes.append((False, exc))
                        else:
                            outcomes.append((True, result))
            except Exception:
                pass  # the commit itself failed (not any one write): one at a time below
            else:
                self._count(len(fns))
                return outcomes
        # Alone, or the shared commit failed: a transaction each, so that each caller gets
        # its own outcome (and an agent whose report failed alone is the one dropped).
        return [self._alone(fn) for fn in fns]

    def _alone(self, fn: Callable[[Session], Any]) -> tuple[bool, Any]:
        try:
            with self.store.transaction() as session:
                result = fn(session)
        except Exception as exc:
            return False, exc
        self._count(1)
        return True, result

    def _count(self, writes: int) -> None:
        self.batches += 1
        self.writes += writes


def _warm(session: Session, batch: list[_Write]) -> list[Any]:
    keys: dict[Warm, list[Any]] = {}
    for w in batch:
        if w.warm is not None:
            keys.setdefault(w.warm[0], []).append(w.warm[1])
    return [warm(session, k) for warm, k in keys.items()]
