"""A session server's configuration (on its stdin only: it holds the ticket and the host
key), and the URL it dials back to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from corral.urls import ws_url


@dataclass
class SessionConfig:
    """What the launcher hands a session server, on its stdin only (it holds the ticket and
    the host key)."""

    session_id: str
    ticket: str
    relay_url: str
    authorized_keys: list[str]
    host_key: str
    env: dict[str, str]
    cwd: str
    who: str = ""
    confined: bool = False
    # Unconfined: the replica's shim and workload group (whose listeners a session reaches).
    shim_pid: int | None = None
    pgid: int | None = None
    # Confined: the replica's init (PID 1 of its namespace) to enter, and whom to become.
    init_pid: int | None = None
    init_start_time: int | None = None
    uid: int | None = None
    gid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionConfig:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("session config: expected a JSON object")
        return cls(**data)


def relay_url(server: str, session_id: str) -> str:
    """The dial-back URL of a session, from the control plane's http(s) URL."""
    return ws_url(server, f"/v1/agent/relay/{session_id}")
