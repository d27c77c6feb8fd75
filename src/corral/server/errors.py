"""What the services refuse, in the domain's words: not found, conflict, forbidden, invalid.

The services raise these and know nothing of HTTP; `server/api/errors.py` maps each kind
to its status code once, so a new front end (the console, a gRPC API) maps them too.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A refusal the caller can act on: `message` says what and why, `fields` which
    input (path, message) when an input is at fault."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class Invalid(DomainError):
    code = "invalid"


class NotFound(DomainError):
    code = "not_found"

    @classmethod
    def of(cls, what: str) -> NotFound:
        return cls(f"{what} not found")


class Conflict(DomainError):
    """The request clashes with what exists (a name taken, a state that forbids it)."""

    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class Unauthorized(DomainError):
    code = "unauthorized"


class Busy(DomainError):
    """Could not be done now for reasons that pass; the same request may succeed later."""

    code = "busy"
