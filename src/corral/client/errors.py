"""What can go wrong talking to a corral server, as exceptions a caller can tell apart."""

from __future__ import annotations

from dataclasses import dataclass


class CorralError(Exception):
    """Base of every error the SDK raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad field of a request, as the server named it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ApiError(CorralError):
    """The server answered with an error status (4xx or 5xx)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[FieldProblem] | None = None,
        *,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields or [])
        self.hint = hint  # what to do about it, when the client knows better than the server
        super().__init__(self._text())

    def _text(self) -> str:
        # The server's 422 message already spells out its fields; repeating them reads badly.
        extra = [str(f) for f in self.fields if str(f) not in self.message]
        return "\n".join([self.message, *extra])

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(status={self.status}, code={self.code!r}, message={self.message!r})"


class BadRequest(ApiError):
    """400 or 422: the request (often a spec) is invalid; `fields` names each bad field."""


class Unauthorized(ApiError):
    """401: the token is missing, unknown or revoked."""


class Forbidden(ApiError):
    """403: the token's role or workspace does not allow this."""


class NotFound(ApiError):
    """404: no such job, workspace or node."""


class Conflict(ApiError):
    """409: it already exists, or it is in a state that does not allow this yet."""


class TooLarge(ApiError):
    """413 or 431: the request (its body or its headers) is larger than the server takes."""


class TooManyRequests(ApiError):
    """429: too many failed authentications from this address; wait and try again."""


class ServerFailure(ApiError):
    """5xx: the server failed; retrying later may help."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: BadRequest,
    429: TooManyRequests,
    431: TooLarge,
}


def api_error(
    status: int, code: str, message: str, fields: list[FieldProblem] | None = None
) -> ApiError:
    """The most specific ApiError subclass for a status."""
    kind = _BY_STATUS.get(status, ServerFailure if status >= 500 else ApiError)
    return kind(status, code, message, fields)


class ServerUnreachable(CorralError):
    """No connection could be made to the server."""

    def __init__(self, server: str, detail: str | None = None) -> None:
        self.server = server
        self.detail = detail
        super().__init__(
            f"cannot reach the corral server at {server} — start one with `corral up` "
            "(or `corral up --detach`), or set CORRAL_SERVER"
        )


class ProtocolError(CorralError):
    """The server answered something this client does not understand (a version mismatch?)."""


class ConfigError(CorralError):
    """The local configuration (config.json, environment) is unusable."""


class ConnectionFailed(CorralError):
    """A connection was made but the exchange failed: a timeout, or the server went away."""

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        self.detail = detail
        super().__init__(f"the request to the corral server at {server} failed: {detail}")


class NotCorralApi(ConfigError):
    """The address answers HTTP, but not as corral's API: the gateway, or another server."""

    def __init__(self, server: str, where: str, what: str) -> None:
        """`where`: the server as the user should read it (its address, and why that one)."""
        self.server = server
        super().__init__(
            f"{where} is not a corral API server: {what}; point --server or CORRAL_SERVER at "
            "the control plane (`corral up` prints its address, port 7390 by default)"
        )
