"""Small HTTP/1.1 pieces the proxy writes: heads, chunk framing, error replies."""

from __future__ import annotations

import json
from http import HTTPStatus

from corral.gateway.forwarding import FORWARDING

# Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers the gateway never passes on as they came: hop-by-hop ones, Expect (it
# answers 100-continue itself) and the forwarding headers it writes itself (forwarding.py).
NOT_FORWARDED = HOP_BY_HOP | {b"expect"} | FORWARDING
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode()
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status] = line
    return line


def chunk_size(n: int) -> bytes:
    return b"%x\r\n" % n


def no_body(status: int, method: bytes) -> bool:
    return method == b"HEAD" or status < 200 or status in (204, 304)


# On the gateway's own answers (never on a replica's): a client that took the gateway for
# the control plane's API can say so instead of reporting "no such endpoint".
OWN_ANSWER = b"corral-gateway: 1\r\n"


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    close: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A complete JSON error reply, shaped like the REST API's ErrorBody."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [
        status_line(status),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        OWN_ANSWER,
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d\r\n" % retry_after)
    if close:
        head.append(b"connection: close\r\n")
    head.append(extra)
    return b"".join(head) + b"\r\n" + body


def simple_response(status: int, content_type: bytes, body: bytes, *, close: bool = False) -> bytes:
    head = status_line(status) + b"content-type: " + content_type + b"\r\n"
    head += b"content-length: %d\r\n" % len(body) + OWN_ANSWER
    if close:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body
