"""The WebSocket URL of a path on the control plane's API, from its http(s) URL: the agent's
channel, a session's dial-back and the user's relay all dial one."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def ws_url(server: str, path: str) -> str:
    """`path` (with any ?query) on the API at `server`: http -> ws, https -> wss."""
    parts = urlsplit(server.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path_part, _, query = path.partition("?")
    return urlunsplit((scheme, parts.netloc, parts.path + path_part, query, ""))
