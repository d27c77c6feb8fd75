"""One server runs the controllers on a store: the controller lease, on both databases.

A second `corral server` on a database another one runs used to mark every node
disconnected at its start. Now it must take the lease first: refused while the holder
lives, taken at once when released or when the holder's process is gone, taken over when
the holder has stopped renewing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from corral.server.lease import Lease, LeaseHeld
from corral.server.store.db import Store
from corral.server.store.tables import Lease as LeaseRow
from corral.server.store.tables import Node
from support.app import in_process
from support.cluster import free_port
from support.store import register_node


class FakeTime:
    """monotonic() and sleep() for a waiting server: sleeping advances the time and runs
    what the other server does meanwhile."""

    def __init__(self, meanwhile: list[object] | None = None) -> None:
        self.now = 0.0
        self.slept = 0.0
        self.meanwhile = meanwhile

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_a_free_lease_is_taken_at_once_and_a_released_one_too(store: Store) -> None:
    first, second = Lease(store), Lease(store)
    first.acquire(lambda: 1.0, silent_s=10.0)
    assert first.held
    first.release()
    time = FakeTime()
    second.acquire(lambda: 2.0, silent_s=10.0, sleep=time.sleep, monotonic=time.monotonic)
    assert second.held and time.slept == 0.0
    assert not first.renew(3.0) and not first.held  # the old holder knows it lost it


def test_a_second_server_is_refused_while_the_holder_renews(store: Store) -> None:
    first, second = Lease(store), Lease(store)
    first.acquire(lambda: 1.0, silent_s=10.0)
    time = FakeTime()

    def sleep(seconds: float) -> None:  # the holder renews while the second one waits
        time.sleep(seconds)
        assert first.renew(time.now)

    with pytest.raises(LeaseHeld) as refused:
        second.acquire(lambda: 2.0, silent_s=10.0, sleep=sleep, monotonic=time.monotonic)
    assert first.holder in str(refused.value) and "stop it first" in str(refused.value)
    assert not second.held and first.held and first.renew(5.0)


def test_a_holder_that_stopped_renewing_is_taken_over_after_the_silence(store: Store) -> None:
    first, second = Lease(store), Lease(store)
    first.acquire(lambda: 1.0, silent_s=10.0)
    # On another host: its pid says nothing here, only its silence does.
    with store.transaction() as session:
        session.execute(update(LeaseRow).values(host="elsewhere"))
    time = FakeTime()
    second.acquire(lambda: 2.0, silent_s=10.0, sleep=time.sleep, monotonic=time.monotonic)
    assert second.held and time.slept >= 10.0
    assert not first.renew(30.0)  # the frozen holder, back: it stops leading


def test_a_holder_whose_process_is_gone_is_taken_over_at_once(store: Store) -> None:
    first, second = Lease(store), Lease(store)
    first.acquire(lambda: 1.0, silent_s=10.0)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    with store.transaction() as session:  # the holder was that process, on this host
        session.execute(update(LeaseRow).values(pid=int(gone.stdout)))
    time = FakeTime()
    second.acquire(lambda: 2.0, silent_s=10.0, sleep=time.sleep, monotonic=time.monotonic)
    assert second.held and time.slept == 0.0


@pytest.fixture
def live_holder(store: Store) -> Iterator[Lease]:
    """Another server holding the lease and renewing it, as a real one does."""
    holder = Lease(store)
    holder.acquire(lambda: 1.0, silent_s=10.0)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(0.1):
            holder.renew(2.0)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    yield holder
    stop.set()
    thread.join(5)


def test_a_second_app_does_not_start_nor_disconnect_the_first_ones_nodes(
    store: Store, live_holder: Lease, database_url: str, tmp_path: Path
) -> None:
    node = register_node(store, "n1")  # connected, to the server holding the lease
    with pytest.raises(LeaseHeld), in_process(database_url, tmp_path, lease_silent_s=2.0):
        pass
    with store.read() as session:
        row = session.get(Node, node)
        assert row is not None and row.connected  # untouched by the refused server
    assert live_holder.held and live_holder.renew(3.0)


def test_corral_server_on_a_database_another_runs_says_so_in_one_line(
    store: Store, live_holder: Lease, database_url: str, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CORRAL_HOME": str(tmp_path / "home"),
        "CORRAL_DATABASE_URL": database_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "server", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("error: another corral server runs the controllers")
    assert live_holder.holder in lines[-1]
