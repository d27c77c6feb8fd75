"""Bounds on a client's request head: its size, its header count, the time it takes.

Without them one unauthenticated connection can make the gateway buffer an endless header
(httptools keeps a header's name and value whole until it ends) or hold a socket open
forever by sending one byte at a time. A head over a bound is answered and the connection
closed at once; nothing more of it is read.

    size   bytes read while a head is incomplete > max_bytes   → 431, close
    count  headers in one head > max_count                     → 431, close
    time   a head's first byte to its end > timeout_s          → 408, close
    shape  two Host, or two Transfer-Encoding headers          → 400, close
           a transfer coding other than `chunked`              → 501, close

(Content-Length together with Transfer-Encoding, and two Content-Length headers, are
already refused by llhttp itself: 400.)
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_COUNT = 100
DEFAULT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_count: int = DEFAULT_MAX_COUNT
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def of(
        cls,
        max_bytes: int | None = None,
        max_count: int | None = None,
        timeout_s: float | None = None,
    ) -> HeadLimits:
        """The defaults, but for the values given (options left unset are None)."""
        return cls(
            DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
            DEFAULT_MAX_COUNT if max_count is None else max_count,
            DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
        )

    def __post_init__(self) -> None:
        if self.max_bytes < 1024 or self.max_count < 1 or self.timeout_s <= 0:
            raise ValueError(
                "head limits: max_bytes must be at least 1024, max_count at least 1 and "
                f"timeout_s positive (got {self.max_bytes}, {self.max_count}, {self.timeout_s})"
            )


class HeadRefused(Exception):
    """Raised inside a parser callback: the request is answered with `status` and closed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def too_many_headers(limits: HeadLimits) -> HeadRefused:
    return HeadRefused(
        431, "header_fields_too_large", f"more than {limits.max_count} request header fields"
    )


def head_too_large(limits: HeadLimits) -> HeadRefused:
    return HeadRefused(
        431, "header_fields_too_large", f"request head larger than {limits.max_bytes} bytes"
    )


def head_too_slow(limits: HeadLimits) -> HeadRefused:
    return HeadRefused(
        408, "request_timeout", f"request head not complete within {limits.timeout_s:g} s"
    )


# Headers a request may carry once: a second Host makes routing ambiguous (the gateway
# and the replica could each read a different one), a second Transfer-Encoding makes the
# framing ambiguous (request smuggling).
SINGLE = frozenset({b"host", b"transfer-encoding"})


def repeated(name: bytes) -> HeadRefused:
    return HeadRefused(400, "bad_request", f"more than one {name.decode('latin-1')} header")


def check_transfer_encoding(value: bytes) -> None:
    """The gateway re-frames request bodies itself, so `chunked` is the one coding it takes."""
    if value.strip().lower() != b"chunked":
        raise HeadRefused(
            501, "not_implemented", "the only request transfer coding accepted is chunked"
        )
