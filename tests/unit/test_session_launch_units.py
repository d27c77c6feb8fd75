"""agent/sessions/launch.py without processes: what it refuses before starting anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from corral.agent.runner import Runner
from corral.agent.sessions.launch import MAX_PER_REPLICA, Sessions, _Running
from corral.wire.sessions import OpenSession


def opening(session_id: str, replica_id: str = "r1") -> OpenSession:
    return OpenSession(
        session_id=session_id, ticket="t", replica_id=replica_id, authorized_keys=[], host_key=""
    )


def test_a_replica_gets_at_most_so_many_sessions_and_another_is_not_held_up() -> None:
    alive = SimpleNamespace(exited=False, stopping=False, pid=1, path=Path("/nonexistent"))
    runner = cast(Runner, SimpleNamespace(records={"r1": alive, "r2": alive}))
    sessions = Sessions(runner, "http://127.0.0.1:1")
    proc = cast(Any, None)
    for i in range(MAX_PER_REPLICA):
        sessions._running[f"s{i}"] = _Running(f"s{i}", "r1", proc)
    why = asyncio.run(sessions.open(opening("one-more")))
    assert why is not None and f"{MAX_PER_REPLICA} sessions open" in why and "\n" not in why
    # The bound is per replica: r2's first session is not refused for it (it fails later,
    # preparing its configuration, as r2 here has no directory).
    other = asyncio.run(sessions.open(opening("first", "r2")))
    assert other is not None and "sessions open" not in other
    assert "cannot start a session in replica r2" in other
