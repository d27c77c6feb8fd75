"""One server runs the controllers on a store: the one that holds its lease.

A second `corral server` on the same database used to mark every node disconnected at its
start and run a second scheduler beside the first. Now a starting server takes the lease
first: free or released, it is taken at once; held by a process of this host that no
longer exists, at once too; held by a holder that keeps renewing it, the new server
refuses to start and says who holds it; held by a holder that has stopped renewing
(crashed elsewhere), it is taken over after `silent_s`.

Liveness is judged by the holder's `beat` moving, not by comparing clocks: servers on
different hosts need not agree on the time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from corral.server.clock import Clock
from corral.server.config import SettingError
from corral.server.store.db import Store
from corral.server.store.tables import Lease as LeaseRow

log = logging.getLogger("corral.server.lease")

CONTROLLERS = "controllers"
RENEW_S = 2.0  # a live holder moves its beat this often
WATCH_S = 0.25  # how often a waiting server looks at the beat


class LeaseHeld(SettingError):
    """Another live server holds the lease: this one must not run its controllers.
    (A SettingError: the database it was given is another server's; the CLI says so in
    one line.)"""

    def __init__(self, holder: str) -> None:
        super().__init__(
            f"another corral server runs the controllers on this database ({holder}) and "
            "is alive; stop it first (`corral down` if `corral up` started it), or give "
            "this server a database of its own (CORRAL_DATABASE_URL). Two at once would "
            "mark the first one's nodes disconnected"
        )
        self.holder = holder


@dataclass(frozen=True)
class Seen:
    holder: str | None
    host: str | None
    pid: int | None
    beat: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class Lease:
    def __init__(self, store: Store, name: str = CONTROLLERS) -> None:
        self.store = store
        self.name = name
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.holder = f"{self.host} pid {self.pid} #{uuid.uuid4().hex[:8]}"
        self.held = False

    def seen(self) -> Seen | None:
        with self.store.read() as session:
            row = session.get(LeaseRow, self.name)
            if row is None:
                return None
            return Seen(row.holder, row.host, row.pid, row.beat)

    def _take(self, now: float, expected: Seen | None) -> bool:
        """Compare-and-set: take the lease if it is still as `expected` was seen."""
        values = {
            "holder": self.holder,
            "host": self.host,
            "pid": self.pid,
            "acquired_at": now,
            "renewed_at": now,
        }
        try:
            with self.store.transaction() as session:
                if expected is None:
                    if session.get(LeaseRow, self.name) is not None:
                        return False
                    session.add(LeaseRow(name=self.name, beat=1, **values))
                    session.flush()
                else:
                    changed = session.execute(
                        update(LeaseRow)
                        .where(
                            LeaseRow.name == self.name,
                            LeaseRow.beat == expected.beat,
                            (LeaseRow.holder == expected.holder)
                            if expected.holder is not None
                            else LeaseRow.holder.is_(None),
                        )
                        .values(beat=expected.beat + 1, **values)
                    )
                    if changed.rowcount != 1:  # type: ignore[attr-defined]
                        return False
        except IntegrityError:
            return False  # another server inserted it first
        self.held = True
        return True

    def _takeable_now(self, seen: Seen | None) -> bool:
        if seen is None or seen.holder is None or seen.holder == self.holder:
            return True
        # A process of this host that is gone cannot be renewing it.
        return seen.host == self.host and seen.pid is not None and not _pid_alive(seen.pid)

    def acquire(
        self,
        now: Callable[[], float],
        silent_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Take the lease, waiting at most `silent_s` to learn whether its holder lives;
        LeaseHeld if it does."""
        while True:
            first = self.seen()
            if self._takeable_now(first):
                if self._take(now(), first):
                    return
                continue  # raced with another server: look again
            assert first is not None and first.holder is not None
            log.warning(
                "the controller lease is held by %s; waiting up to %g s to see whether it "
                "is still alive",
                first.holder,
                silent_s,
            )
            deadline = monotonic() + silent_s
            while monotonic() < deadline:
                sleep(WATCH_S)
                latest = self.seen()
                if latest == first:
                    continue
                if latest is not None and latest.holder is not None:
                    raise LeaseHeld(latest.holder)  # it renewed, or another took it: alive
                break  # released: take it
            else:
                log.warning("%s stopped renewing the controller lease; taking over", first.holder)
                if self._take(now(), first):
                    return

    def renew(self, now: float) -> bool:
        """Move the beat; False (and no longer held) if another server has taken over."""
        with self.store.transaction() as session:
            row = session.scalar(
                select(LeaseRow).where(LeaseRow.name == self.name).with_for_update()
            )
            if row is None or row.holder != self.holder:
                self.held = False
                return False
            row.beat += 1
            row.renewed_at = now
        self.held = True
        return True

    def try_again(self, now: float) -> bool:
        """After losing it: take it back only if it is free (never from a live holder)."""
        seen = self.seen()
        if seen is None or seen.holder is None:
            return self._take(now, seen)
        return False

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with self.store.transaction() as session:
            session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
                .values(holder=None, host=None, pid=None, beat=LeaseRow.beat + 1)
            )


async def keep(
    lease: Lease,
    clock: Clock,
    silent_s: float,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Renew the lease until cancelled. A server that cannot renew it for half of
    `silent_s` stops acting as the leader before another may take over."""
    last_renewed = monotonic()
    while True:
        await asyncio.sleep(RENEW_S)
        try:
            if lease.held:
                if await asyncio.to_thread(lease.renew, clock.now()):
                    last_renewed = monotonic()
                else:
                    log.error(
                        "another server took over the controller lease; this server's "
                        "controllers pause (it still answers the API)"
                    )
            elif await asyncio.to_thread(lease.try_again, clock.now()):
                last_renewed = monotonic()
                log.warning("the controller lease was free again: this server leads")
        except Exception:
            log.warning("could not renew the controller lease", exc_info=True)
            if lease.held and monotonic() - last_renewed > silent_s / 2:
                lease.held = False
                log.error("the controller lease could not be renewed; controllers pause")
