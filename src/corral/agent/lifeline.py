"""The node's lifeline: `python -m corral.agent.lifeline <state_dir>`. Standard library only.

A closed agent connection is either a dead host or an agent restarting (its replicas still
running). The control plane must tell them apart fast: a dead host's work should move in
seconds, and a restarting agent's replicas must never run twice. The lifeline is a small
process that, like the shims, outlives the agent, and speaks for the host while the agent
is away:

```
 agent connected ── touches channel.beat every BEAT_S ──► lifeline stays quiet
 agent gone (crash, restart, its connection dropped)
        └── channel.beat older than STALE_S ──► POST /v1/agent/lifeline every PING_S
 host dead ── agent and lifeline silent together ──► the server declares the node lost
              (closed connection + silent lifeline: server/controllers/liveness.py)
```

It exits when the agent has been away for MAX_AWAY_S (the agent starts a new one when it
comes back), when the server no longer knows the node token, when another lifeline took
its place (lifeline.json names the current one), or when its state directory is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from corral.agent.layout import process_start_time, read_json, write_json_atomic

BEAT = "channel.beat"
LIFELINE = "lifeline.json"
NODE = "node.json"
BEAT_S = 0.2  # how often a connected agent touches channel.beat
STALE_S = 0.6  # the agent is away once the beat is this old
PING_S = 0.25  # how often the lifeline speaks while the agent is away
LOOK_S = 0.1
PING_TIMEOUT_S = 1.0
MAX_AWAY_S = 120.0
UNREACHABLE_S = 10.0  # the server unreachable this long while the agent is away: give up


def _beat_age(state_dir: Path, now: float) -> float | None:
    try:
        return now - (state_dir / BEAT).stat().st_mtime
    except FileNotFoundError:
        return None


def _still_me(state_dir: Path) -> bool:
    try:
        mine = read_json(state_dir / LIFELINE)
    except (OSError, ValueError):
        return False
    return mine is not None and mine.get("pid") == os.getpid()


def _ping(server: str, token: str) -> int | None:
    """The server's HTTP status, or None when it cannot be reached."""
    request = urllib.request.Request(
        server.rstrip("/") + "/v1/agent/lifeline",
        method="POST",
        data=b"",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=PING_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def run(state_dir: Path) -> int:
    last_ping = 0.0
    started = time.time()
    reached = time.monotonic()
    while True:
        time.sleep(LOOK_S)
        if not state_dir.is_dir() or not _still_me(state_dir):
            return 0
        age = _beat_age(state_dir, time.time())
        if age is None:  # no agent has been connected yet: away since this one started
            age = time.time() - started
        if age < STALE_S:
            reached = time.monotonic()
            continue
        if age > MAX_AWAY_S:
            return 0
        now = time.monotonic()
        if now - last_ping < PING_S:
            continue
        last_ping = now
        try:
            node = read_json(state_dir / NODE)
        except (OSError, ValueError):
            node = None
        if not node or not node.get("server") or not node.get("node_token"):
            continue
        status = _ping(str(node["server"]), str(node["node_token"]))
        if status in (401, 403):
            return 0  # the node is gone from the server: nothing to speak for
        if status is not None:
            reached = now
        elif now - reached > UNREACHABLE_S:
            return 0


def ensure(state_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start the node's lifeline unless one runs; returns the process when it is new (the
    agent reaps it), None when one runs already."""
    try:
        known = read_json(state_dir / LIFELINE)
    except (OSError, ValueError):
        known = None
    if known is not None:
        pid, started = known.get("pid"), known.get("start_time")
        if isinstance(pid, int) and started is not None and process_start_time(pid) == started:
            return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.agent.lifeline", str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    write_json_atomic(
        state_dir / LIFELINE, {"pid": proc.pid, "start_time": process_start_time(proc.pid)}
    )
    return proc


def touch(state_dir: Path) -> None:
    """The agent is connected: keep the lifeline quiet."""
    path = state_dir / BEAT
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m corral.agent.lifeline STATE_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
