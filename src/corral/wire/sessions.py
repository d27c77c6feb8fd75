"""Sessions into a replica (a pod's, or a job's for debugging), over the agent's channel.

A user's SSH client speaks to the control plane over a WebSocket (`corral pod proxy`); the
control plane tells the node's agent `open_session`; the agent starts a session server
inside the replica (its namespaces, its user) that dials its OWN WebSocket back to
`/v1/agent/relay/<session_id>` with the one-time ticket; the control plane joins the two.
Bulk copies therefore never share a connection with the agent's heartbeats and reports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_AUTHORIZED_KEYS = 256
MAX_KEY_CHARS = 16 * 1024
# The relay's WebSocket messages carry raw SSH bytes, at most this many each.
RELAY_FRAME_BYTES = 256 * 1024
# Close codes of the relay WebSockets (4000-4999 are the application's).
CLOSE_NOT_RUNNING = 4404  # the pod or replica is not running
CLOSE_REFUSED = 4403  # not allowed
CLOSE_UNAVAILABLE = 4503  # the node did not answer in time, or refused


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OpenSession(_Msg):
    """Server -> agent: start a session server in `replica_id` and dial back."""

    type: Literal["open_session"] = "open_session"
    session_id: str = Field(max_length=64)
    ticket: str = Field(max_length=128, description="one-time credential for the dial-back")
    replica_id: str = Field(max_length=64)
    authorized_keys: list[str] = Field(
        max_length=MAX_AUTHORIZED_KEYS,
        description="OpenSSH public key lines of the workspace's registered keys",
    )
    host_key: str = Field(
        max_length=MAX_KEY_CHARS,
        description="the workspace's SSH host private key (OpenSSH format): pinned by clients",
    )
    who: str = Field(default="", max_length=200, description="for the session's own log")


class SessionRefused(_Msg):
    """Agent -> server: the session cannot start here (unknown replica, not running, ...)."""

    type: Literal["session_refused"] = "session_refused"
    session_id: str = Field(max_length=64)
    reason: str = Field(max_length=1000)


class DropVolume(_Msg):
    """Server -> agent: a workspace volume was deleted; remove its directory on this node."""

    type: Literal["drop_volume"] = "drop_volume"
    workspace: str = Field(max_length=63)
    name: str = Field(max_length=63)
