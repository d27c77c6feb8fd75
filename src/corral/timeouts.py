"""Waiting with a deadline without losing a cancellation.

On Python 3.11, `asyncio.wait_for` returns normally when the task is cancelled just as
the awaited thing completes: the cancellation is lost, and a loop that calls it (a
controller waiting for its wake-up) never stops, so shutdown hangs. `asyncio.timeout`
keeps the two apart; every deadline-bounded wait in corral goes through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False when `timeout` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """`awaitable`'s result, or TimeoutError after `timeout` seconds (never a lost cancel)."""
    async with asyncio.timeout(timeout):
        return await awaitable
