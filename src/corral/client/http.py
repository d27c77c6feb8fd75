"""The SDK's plumbing: one server, one token, one workspace; requests, pages, and the errors
a person can act on. Each resource's calls live in a module of their own (cluster.py,
jobs.py, endpoints.py); client.Client puts them together."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from corral import __version__
from corral.client.config import DEFAULT_WORKSPACE, Origin, described, rejected
from corral.client.errors import (
    ConfigError,
    ConnectionFailed,
    CorralError,
    FieldProblem,
    NotCorralApi,
    ProtocolError,
    ServerUnreachable,
    Unauthorized,
    api_error,
)
from corral.client.wire import parse_view
from corral.wire.api import Paged, WhoAmI

V = TypeVar("V", bound=BaseModel)
P = TypeVar("P", bound=Paged)
X = TypeVar("X")

# Items asked for per request when a list method reads every page (the server's maximum).
PAGE_ALL = 1000


class Http:
    """The connection and the request plumbing every resource's calls share."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        workspace: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        origin: Origin | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        # None: the token's own workspace (asked of the server once), "default" for a
        # cluster-wide token. A team's token then works with no --workspace at all.
        self._workspace = workspace
        self.origin = origin or Origin()
        self._token_sent = bool(token)
        self.timeout = timeout
        headers = {"User-Agent": f"corral-python/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.server, headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigError(f"{server!r} is not a valid server URL: {exc}") from None
        # Kept as attributes so a test can run follow_logs/wait_job without real sleeping.
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"{type(self).__name__}(server={self.server!r}, workspace={self._workspace!r})"

    @property
    def workspace(self) -> str:
        """The workspace commands act in: the one given, else the token's own."""
        if self._workspace is None:
            self._workspace = self._get(WhoAmI, "/v1/whoami").workspace or DEFAULT_WORKSPACE
        return self._workspace

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _every(
        self, kind: type[P], path: str, params: dict[str, Any], items: Callable[[P], list[X]]
    ) -> Iterator[X]:
        """Every item of a paged list: the server's own page size first (most lists fit),
        then pages of its largest size."""
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor, "limit": PAGE_ALL} if cursor else {})}
            page = self._get(kind, path, query)
            yield from items(page)
            cursor = page.next_cursor
            if not cursor:
                return

    def _ws(self, workspace: str | None = None) -> str:
        return f"/v1/workspaces/{quote(workspace or self.workspace, safe='')}"

    def _job(self, name: str) -> str:
        return f"{self._ws()}/jobs/{quote(name, safe='')}"

    def _secret(self, name: str, workspace: str | None = None) -> str:
        return f"{self._ws(workspace)}/secrets/{quote(name, safe='')}"

    def _endpoint(self, name: str, workspace: str | None = None) -> str:
        return f"{self._ws(workspace)}/endpoints/{quote(name, safe='')}"

    def _get(self, kind: type[V], path: str, params: dict[str, Any] | None = None) -> V:
        return self._parse(kind, self._request("GET", path, params=params))

    def _send(self, kind: type[V], method: str, path: str, body: Any) -> V:
        return self._parse(kind, self._request(method, path, json=body))

    def _parse(self, kind: type[V], response: httpx.Response) -> V:
        return parse_view(kind, self._json(response))

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ProtocolError(
                f"{self.server}{response.request.url.path} answered HTTP {response.status_code} "
                "without JSON; is this a corral server?"
            ) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"} if content is not None else None
        try:
            response = self._http.request(
                method, path, json=json, params=params, content=content, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(self.server, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(self.server, f"no answer within {self.timeout:g} s") from exc
        except httpx.UnsupportedProtocol as exc:
            raise ConfigError(f"{self.server!r} is not a valid server URL: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.server, str(exc) or type(exc).__name__) from exc
        if response.status_code >= 400:
            _check_corral(response, self.server, self.origin)
            error = _error_from(response)
            if isinstance(error, Unauthorized):
                raise rejected(error, self.server, self.origin, token_sent=self._token_sent)
            raise error
        return response


_API_MARKER = "corral-api"
_GATEWAY_MARKER = "corral-gateway"


def _check_corral(response: httpx.Response, server: str, origin: Origin) -> None:
    """Raise NotCorralApi when a 404/405 comes from something that is not corral's API:
    reporting its "Not Found" as if corral had said it sends people the wrong way."""
    if response.status_code not in (404, 405) or _API_MARKER in response.headers:
        return
    request = f"{response.request.method} {response.request.url.path}"
    if _GATEWAY_MARKER in response.headers:
        what = "it is corral's gateway, which serves endpoints, not the API"
        raise NotCorralApi(server, described(server, origin), what)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        what = f"it answered {request} with HTTP {response.status_code} {response.reason_phrase}"
        raise NotCorralApi(server, described(server, origin), what)


def _error_from(response: httpx.Response) -> CorralError:
    status = response.status_code
    code = f"http_{status}"
    message = f"HTTP {status} {response.reason_phrase}".strip()
    fields: list[FieldProblem] = []
    try:
        body = response.json()
    except ValueError:
        body = None
        text = response.text.strip()
        if text:
            message = f"{message}: {text[:300]}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        for item in err.get("fields") or []:
            if isinstance(item, dict):
                fields.append(FieldProblem(str(item.get("path", "")), str(item.get("message", ""))))
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        # A plain FastAPI/Starlette error, e.g. a route this server version does not have.
        message = body["detail"]
    return api_error(status, code, message, fields)
