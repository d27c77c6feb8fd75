"""Deadline-bounded waits never lose a cancellation, so controllers always stop.

On Python 3.11 `asyncio.wait_for` returns normally when its task is cancelled just as the
awaited event is set: a controller woken by a request at the moment the server shuts
down would then loop forever and the shutdown would hang (it did, once, in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from corral.server.controllers import runner
from corral.timeouts import wait_event, within


async def _cancel_as_woken(
    start: Callable[[], Coroutine[Any, Any, Any]], event: asyncio.Event
) -> bool:
    """Start the waiter, set `event` and cancel in the same turn of the loop; True when
    the task then ends within two seconds."""
    task = asyncio.create_task(start())
    await asyncio.sleep(0.01)  # it is waiting now
    event.set()
    await asyncio.sleep(0)  # the event's waiter is woken, the task not yet resumed
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    if not done:
        task.cancel()
    return bool(done) and task.cancelled()


def test_wait_event_says_whether_the_event_was_set_in_time() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        late = await wait_event(event, 0.01)
        event.set()
        return late, await wait_event(event, 0.01)

    assert asyncio.run(main()) == (False, True)


def test_within_returns_the_result_or_raises_timeout() -> None:
    async def main() -> int:
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(1.0), 0.01)
        return await within(asyncio.sleep(0, result=7), 1.0)

    assert asyncio.run(main()) == 7


def test_a_cancel_that_arrives_as_the_event_is_set_is_not_lost() -> None:
    async def main() -> bool:
        event = asyncio.Event()

        async def loop() -> None:
            while True:  # the shape of every controller: wait, work, wait again
                await wait_event(event, 1.0)
                event.clear()
                await asyncio.sleep(0)

        return await _cancel_as_woken(loop, event)

    assert asyncio.run(main())


class _Idle:
    """A controller with nothing to do: the runner's loop is what is under test."""

    name = "idle"

    def __init__(self, wakeup: asyncio.Event, batch_s: float) -> None:
        self._wakeup = wakeup
        self._batch_s = batch_s

    def period_s(self, cp: Any) -> float:
        return 1.0

    def wakeup(self, cp: Any) -> asyncio.Event:
        return self._wakeup

    def batch_s(self, cp: Any) -> float:
        return self._batch_s

    def prepare(self, cp: Any) -> None:
        pass

    def keys(self, session: Any, now: float) -> list[str]:
        return []

    def reset(self) -> None:
        pass


@pytest.mark.parametrize("batch_s", [0.0, 0.01])
def test_a_controller_stops_when_cancelled_as_it_is_woken(batch_s: float) -> None:
    async def main() -> bool:
        wakeup = asyncio.Event()
        cp = SimpleNamespace(
            leads=lambda: True,
            apply=lambda effects: None,
            clock=SimpleNamespace(now=lambda: 0.0),
            store=SimpleNamespace(read=contextlib.nullcontext),
        )
        controller = _Idle(wakeup, batch_s)
        return await _cancel_as_woken(
            lambda: runner.run(cp, controller),  # type: ignore[arg-type]
            wakeup,
        )

    assert asyncio.run(main())
