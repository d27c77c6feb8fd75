"""Waiting for a process that is not (necessarily) our child, and signalling process groups."""

from __future__ import annotations

import asyncio
import os

from corral.agent.layout import is_alive, process_start_time

POLL_S = 0.2


async def wait_gone(pid: int, start_time: int | None) -> None:
    """Return once the process `pid` that started at `start_time` has exited.

    Works for adopted processes (no waitpid possible): a pidfd becomes readable when the
    process exits. Where pidfds are missing (old kernels) it falls back to a short poll.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:
        await _poll_gone(pid, start_time)
        return
    try:
        # Checked after opening: the pidfd now pins whichever process had the pid, so a
        # matching start time proves it is the one we mean.
        if process_start_time(pid) != start_time:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def _poll_gone(pid: int, start_time: int | None) -> None:
    while is_alive(pid, start_time):
        await asyncio.sleep(POLL_S)


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the process group; False if the group is already empty."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the id now names someone else's group: ours is gone
    return True
