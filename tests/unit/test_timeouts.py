"""Deadline-bounded waits never lose a cancellation, so controllers always stop.

On Python 3.11 `asyncio.wait_for` returns normally when its task is cancelled just as the
awaited event is set: a controller woken by a request at the moment the server shuts
down would then loop forever and the shutdown would hang (it did, once, in CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from corral.server.controllers import endpoints as endpoint_controller
from corral.server.controllers import scheduler as scheduler_controller
from corral.server.services.effects import Effects
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


@pytest.mark.parametrize("controller", ["scheduler", "endpoints"])
def test_a_controller_stops_when_cancelled_as_it_is_woken(
    controller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_controller, "schedule_once", lambda cp, rounds: Effects())
    monkeypatch.setattr(endpoint_controller, "tick", lambda cp, memory, quarantine: Effects())

    async def main() -> bool:
        cp = SimpleNamespace(
            scheduler_wakeup=asyncio.Event(),
            endpoints_wakeup=asyncio.Event(),
            options=SimpleNamespace(scheduler_interval_s=1.0, scheduler_batch_s=0.0),
            apply=lambda effects: None,
        )
        if controller == "scheduler":
            return await _cancel_as_woken(
                lambda: scheduler_controller.run(cp),  # type: ignore[arg-type]
                cp.scheduler_wakeup,
            )
        return await _cancel_as_woken(
            lambda: endpoint_controller.run(cp),  # type: ignore[arg-type]
            cp.endpoints_wakeup,
        )

    assert asyncio.run(main())
