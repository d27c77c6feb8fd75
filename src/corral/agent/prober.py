"""Running the HTTP health probes of serving replicas (the decisions are in probes.py).

Each running replica whose assignment has a `probe` gets one asyncio task that asks
`GET http://127.0.0.1:{port}{path}` every `period_s`, each under `timeout_s`, and sets the
record's `ready` when the verdict changes, then calls `on_change` (the session sends the
replica's report at once). The request is a raw HTTP/1.1 exchange that reads the status
line and nothing more: no client library, no body, no DNS, never a blocking call. A slow or
silent replica costs its own task a timeout and nothing else.

Probing starts when the runner says the workload runs (or at adoption), and ends when the
replica exits (on_change) or is being stopped (checked before every probe). Its state lives
in memory only: a restarted agent probes its adopted replicas from scratch.

A passing answer counts only if it can have come from the replica: every listener that a
connection to 127.0.0.1:port may reach must be a socket of the replica's own processes
(ownership.py); probes.owner_check_due says when to look. Not ready, the record's
`unready_reason` says why in the probe's words (probes.py): the reason a user reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import corral
from corral.agent import probes
from corral.agent.ownership import Ownership
from corral.agent.probes import Failure
from corral.agent.records import ReplicaRecord
from corral.wire.agent import Probe

log = logging.getLogger("corral.agent.probes")

HOST = "127.0.0.1"
_USER_AGENT = f"corral-agent/{corral.__version__}"
_SAFE_PATH = "/%?&=:@!$'()*+,;"  # kept as is; anything else (spaces, CR/LF...) is escaped


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str  # "200", "503", "connection refused", "no answer within 2s"...
    failure: Failure | None = None  # how it failed, in a user's words (None: passed)


HttpGet = Callable[[int, str, float], Awaitable[Result]]
# (record, port) -> None if only the replica listens there, else why not (see ownership.py).
Verify = Callable[[ReplicaRecord, int], Awaitable[str | None]]


def request_bytes(port: int, path: str) -> bytes:
    target = quote(path if path.startswith("/") else f"/{path}", safe=_SAFE_PATH)
    return (
        f"GET {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: {_USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


async def http_get(port: int, path: str, timeout_s: float) -> Result:
    """One probe: the status of GET http://127.0.0.1:{port}{path}. Never raises."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(request_bytes(port, path))
                line = await reader.readline()
            finally:
                writer.close()  # unread bytes are the kernel's to drop
    except TimeoutError:
        return Result(False, f"no answer within {timeout_s:g}s", probes.timed_out(path, timeout_s))
    except ConnectionRefusedError:
        return Result(False, "connection refused", probes.refused(port))
    except (OSError, ValueError) as exc:  # ValueError: a status line over 64 KiB
        detail = str(exc) or type(exc).__name__
        return Result(False, detail, probes.failed(path, port, detail))
    code = probes.status_code(line)
    if code is None:
        shown = line[:80].decode("ascii", "replace").strip() or "nothing"
        detail = f"not an HTTP answer: {shown!r}"
        return Result(False, detail, probes.failed(path, port, detail))
    ok = probes.is_success(code)
    return Result(ok, str(code), None if ok else probes.answered(path, code))


class Prober:
    def __init__(
        self,
        on_change: Callable[[str], None],
        *,
        get: HttpGet = http_get,
        verify: Verify | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._get = get
        self._verify = verify or self._check_owner
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, Ownership] = {}  # replica id -> its judged listeners

    @property
    def probing(self) -> frozenset[str]:
        return frozenset(self._tasks)

    def watch(self, record: ReplicaRecord) -> None:
        """Start or end the replica's probing to match its record. Call on every change."""
        rid = record.replica_id
        probe = _live_probe(record)
        task = self._tasks.get(rid)
        if probe is not None and task is None:
            task = asyncio.create_task(self._probe(record, probe), name=f"probe-{rid}")
            self._tasks[rid] = task
            task.add_done_callback(lambda t: self._forget(rid, t))
        elif probe is None and task is not None:
            task.cancel()

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._owners.clear()

    def _forget(self, rid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
            self._owners.pop(rid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("probing replica %s failed", rid, exc_info=task.exception())

    async def _check_owner(self, record: ReplicaRecord, port: int) -> str | None:
        owner = self._owners.setdefault(record.replica_id, Ownership())
        # /proc reads, a few per new listener: off the event loop.
        return await asyncio.to_thread(owner.check, port, record.shim_pid, record.pgid)

    async def _probe(self, record: ReplicaRecord, probe: Probe) -> None:
        rid = record.replica_id
        state = probes.first(self._clock())
        record.ready = state.ready
        record.unready_reason = None
        verified_at: float | None = None  # when the listener was last found the replica's
        while _live_probe(record) is not None:
            wait = state.due - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # look at the record again: it may be stopping by now
            path = probes.path(probe, state)
            started = self._clock()
            result = await self._get(probe.port, path, probe.timeout_s)
            ok, failure = result.ok, result.failure
            if probes.owner_check_due(probe, state, ok, verified_at, self._clock()):
                why = await self._verify(record, probe.port)
                if why is not None:
                    # Answered by a stranger, or failing while one holds the port: either
                    # way the stranger is the news.
                    ok, failure, verified_at = False, probes.foreign(why), None
                elif ok:
                    verified_at = self._clock()
            if _live_probe(record) is None:
                return  # exited or being stopped while we asked: the answer means nothing
            now = self._clock()
            after = probes.observe(probe, state, ok, started, now, failure)
            verdict = probes.news(state, after)
            state = after
            if verdict is None and not probes.reason_due(state, now):
                continue
            record.ready = state.ready
            record.unready_reason = probes.reason(state, now)
            state = probes.reported(state, now)
            where = f"GET :{probe.port}{path}"
            if verdict:
                log.info("replica %s ready (%s answered %s)", rid, where, result.detail)
            elif verdict is False:
                log.warning(
                    "replica %s not ready: %d probes in a row failed (last: %s)",
                    rid,
                    state.failures,
                    record.unready_reason,
                )
            self._on_change(rid)


def _live_probe(record: ReplicaRecord) -> Probe | None:
    """The replica's probe while its workload runs and is not being stopped, else None."""
    if record.exited or record.stopping or record.pid is None or record.assignment is None:
        return None
    return record.assignment.probe
