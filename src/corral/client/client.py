"""The corral SDK: a small synchronous client over the REST API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from corral import __version__
from corral.client.config import DEFAULT_WORKSPACE, Origin, rejected, resolve_settings
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
from corral.spec import JobSpec
from corral.spec.endpoint import EndpointSpec
from corral.wire.api import (
    DEFAULT_JOIN_TTL_S,
    TERMINAL_JOB_STATES,
    EndpointList,
    EndpointView,
    JobKind,
    JobList,
    JobLogs,
    JobView,
    JoinTokenCreate,
    JoinTokenList,
    JoinTokenView,
    LogPage,
    NodeList,
    NodeView,
    Paged,
    QuotaList,
    QuotaSet,
    QuotaView,
    Role,
    SecretInfo,
    SecretList,
    SecretSet,
    StatusView,
    TokenCreate,
    TokenInfo,
    TokenList,
    TokenView,
    WhoAmI,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceView,
)

V = TypeVar("V", bound=BaseModel)
P = TypeVar("P", bound=Paged)
X = TypeVar("X")

# Items asked for per request when a list method reads every page (the server's maximum).
_PAGE_ALL = 1000

# How long follow_logs keeps reading an attempt that has ended (the job finished or restarted)
# but whose log the server has not marked complete: the last chunks may still be on the way.
_LOG_GRACE_S = 3.0
# How often follow_logs asks whether the job has ended while no log arrives.
_JOB_CHECK_S = 2.0


class Client:
    """One server, one token, one workspace; no global state.

    `transport` replaces the network (e.g. `httpx.MockTransport` in tests). Close it, or
    use it as a context manager, to release its connections.
    """

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

    @classmethod
    def from_config(
        cls,
        home: Path | None = None,
        *,
        server: str | None = None,
        token: str | None = None,
        workspace: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> Client:
        """A client set up like the CLI: `$CORRAL_HOME/config.json`, then CORRAL_* variables,
        then these arguments."""
        s = resolve_settings(home, server=server, token=token, workspace=workspace)
        return cls(
            s.server, s.token, s.workspace, transport=transport, timeout=timeout, origin=s.origin
        )

    def __repr__(self) -> str:
        return f"Client(server={self.server!r}, workspace={self._workspace!r})"

    @property
    def workspace(self) -> str:
        """The workspace commands act in: the one given, else the token's own."""
        if self._workspace is None:
            self._workspace = self.whoami().workspace or DEFAULT_WORKSPACE
        return self._workspace

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- cluster -------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers /healthz with ok; never raises for a down server."""
        try:
            body = self._json(self._request("GET", "/healthz"))
        except CorralError:
            return False
        return isinstance(body, dict) and body.get("ok") is True

    def whoami(self) -> WhoAmI:
        return self._get(WhoAmI, "/v1/whoami")

    def status(self) -> StatusView:
        """Nodes, GPUs, work and endpoints at a glance (`corral status`)."""
        return self._get(StatusView, "/v1/status")

    def list_nodes(self) -> list[NodeView]:
        return list(self._every(NodeList, "/v1/nodes", {}, lambda p: p.nodes))

    def list_workspaces(self) -> list[WorkspaceView]:
        return list(self._every(WorkspaceList, "/v1/workspaces", {}, lambda p: p.workspaces))

    def create_workspace(self, name: str) -> WorkspaceView:
        body = WorkspaceCreate(name=name).model_dump(mode="json")
        return self._send(WorkspaceView, "POST", "/v1/workspaces", body)

    def create_token(
        self, role: Role = "member", workspace: str | None = None, name: str | None = None
    ) -> TokenView:
        """A new API token; its secret is in `.token` and is never shown again."""
        body = TokenCreate(name=name, role=role, workspace=workspace).model_dump(
            mode="json", exclude_none=True
        )
        return self._send(TokenView, "POST", "/v1/tokens", body)

    def list_tokens(self, workspace: str | None = None) -> list[TokenInfo]:
        """The tokens this (admin) token administers; never their secrets."""
        params = {"workspace": workspace} if workspace else {}
        return list(self._every(TokenList, "/v1/tokens", params, lambda p: p.tokens))

    def revoke_token(self, name: str, workspace: str | None = None) -> None:
        """Revoke a token of `workspace` (default: the caller's own scope, the cluster's
        tokens for a cluster admin). Other API servers honour it within 10 s."""
        params = {"workspace": workspace} if workspace else None
        self._request("DELETE", f"/v1/tokens/{quote(name, safe='')}", params=params)

    def create_join_token(
        self,
        name: str | None = None,
        ttl_s: float | None = DEFAULT_JOIN_TTL_S,
        max_uses: int | None = None,
    ) -> JoinTokenView:
        """A token agents register nodes with; its secret is in `.token`, shown once.
        ttl_s None: it never expires; max_uses None: unlimited registrations."""
        body = JoinTokenCreate(name=name, ttl_s=ttl_s, max_uses=max_uses).model_dump(mode="json")
        return self._send(JoinTokenView, "POST", "/v1/join-tokens", body)

    def list_join_tokens(self) -> list[JoinTokenView]:
        return list(self._every(JoinTokenList, "/v1/join-tokens", {}, lambda p: p.join_tokens))

    def revoke_join_token(self, name: str) -> None:
        """Nodes can no longer register with it; registered nodes stay."""
        self._request("DELETE", f"/v1/join-tokens/{quote(name, safe='')}")

    # -- quotas --------------------------------------------------------------------------

    def list_quotas(self) -> list[QuotaView]:
        return list(self._every(QuotaList, "/v1/quotas", {}, lambda p: p.quotas))

    def get_quota(self, workspace: str | None = None) -> QuotaView:
        return self._get(QuotaView, f"{self._ws(workspace)}/quota")

    def set_quota(self, workspace: str, gpus: dict[str, int]) -> QuotaView:
        """Replace `workspace`'s guaranteed GPUs per model (cluster admins only)."""
        body = QuotaSet(gpus=gpus).model_dump(mode="json")
        return self._send(QuotaView, "PUT", f"{self._ws(workspace)}/quota", body)

    # -- secrets -------------------------------------------------------------------------

    def set_secret(
        self, name: str, value: str, workspace: str | None = None
    ) -> tuple[SecretInfo, bool]:
        """Create or replace a workspace secret; True when it was created. The value is
        stored encrypted and no API returns it: replicas get it as their spec's
        `secrets:` say."""
        body = SecretSet(value=value).model_dump(mode="json")
        response = self._request("PUT", self._secret(name, workspace), json=body)
        return self._parse(SecretInfo, response), response.status_code == 201

    def list_secrets(self, workspace: str | None = None) -> list[SecretInfo]:
        """Names and times; never values."""
        path = f"{self._ws(workspace)}/secrets"
        return list(self._every(SecretList, path, {}, lambda p: p.secrets))

    def delete_secret(self, name: str, workspace: str | None = None) -> None:
        self._request("DELETE", self._secret(name, workspace))

    # -- jobs ----------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobView:
        """Submit to `spec.workspace` when the spec names one, else to this client's."""
        path = f"{self._ws(spec.workspace)}/jobs"
        # The spec writes sizes as "NMi", so the server reads back exactly these MiB.
        return self._send(JobView, "POST", path, spec.model_dump(mode="json", exclude_none=True))

    def list_jobs(
        self, states: Iterable[str] = (), kind: JobKind = "all", limit: int | None = None
    ) -> list[JobView]:
        """The workspace's jobs, newest first: all of them, or the `limit` newest."""
        found: list[JobView] = []
        cursor: str | None = None
        while limit is None or len(found) < limit:
            # The server's own page size first (most lists fit); its largest after that.
            size = None if cursor is None else _PAGE_ALL
            if limit is not None:
                size = min(size or _PAGE_ALL, limit - len(found))
            page = self.jobs_page(states, kind, size, cursor)
            found.extend(page.jobs)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    def jobs_page(
        self,
        states: Iterable[str] = (),
        kind: JobKind = "all",
        limit: int | None = None,
        cursor: str | None = None,
        *,
        all_workspaces: bool = False,
    ) -> JobList:
        """One page of jobs, newest first; pass its `next_cursor` back for the next.
        all_workspaces: every workspace's (a cluster admin's token), not this client's."""
        params: dict[str, Any] = {}
        chosen = list(states)
        if chosen:
            params["state"] = chosen
        if kind != "all":
            params["kind"] = kind
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        path = "/v1/jobs" if all_workspaces else f"{self._ws()}/jobs"
        return self._get(JobList, path, params)

    def get_job(self, name: str) -> JobView:
        return self._get(JobView, self._job(name))

    def cancel_job(self, name: str) -> JobView:
        return self._send(JobView, "POST", f"{self._job(name)}/cancel", None)

    def delete_job(self, name: str) -> None:
        self._request("DELETE", self._job(name))

    def job_logs(
        self, name: str, replica: int = 0, offset: int = 0, attempt: int | None = None
    ) -> LogPage:
        """One page of a replica's log from byte `offset`; of the current attempt by default."""
        params: dict[str, Any] = {"replica": replica, "offset": offset}
        if attempt is not None:
            params["attempt"] = attempt
        return self._get(LogPage, f"{self._job(name)}/logs", params)

    def all_logs(
        self, name: str, offsets: list[int] | None = None, attempt: int | None = None
    ) -> JobLogs:
        """Every replica's log from `offsets` (by rank) and the job's state, in one request."""
        params: dict[str, Any] = {"offset": offsets or []}
        if attempt is not None:
            params["attempt"] = attempt
        return self._get(JobLogs, f"{self._job(name)}/logs/all", params)

    def follow_logs(self, name: str, replica: int = 0, poll_s: float = 0.25) -> Iterator[str]:
        """Yield a replica's log text as it is written, until the job has ended and all of
        its log is read. When the job restarts, goes on with the new attempt's log."""
        for page in self.follow_log_pages(name, replica, poll_s):
            if page.data:
                yield page.data

    def follow_log_pages(
        self, name: str, replica: int = 0, poll_s: float = 0.25
    ) -> Iterator[LogPage]:
        """Like `follow_logs`, but yields each LogPage that has data, so a caller sees
        `attempt` change. Each attempt is read to its end before the next one."""
        offset = 0
        attempt: int | None = None  # pinned once the job has started
        last_check = self._clock()
        waiting_since: float | None = None  # something follows, but this log is not complete
        while True:
            page = self.job_logs(name, replica, offset, attempt)
            if attempt is None and page.attempt >= 1:
                attempt = page.attempt
            offset = page.next_offset
            if page.data:
                yield page
                if not page.complete:
                    continue  # there may be more right away: read on without sleeping
            now = self._clock()
            if page.complete or waiting_since is not None or now - last_check >= _JOB_CHECK_S:
                last_check = now
                job = self.get_job(name)
                newer = attempt is not None and job.attempt > attempt
                if newer or job.state in TERMINAL_JOB_STATES:
                    if waiting_since is None:
                        waiting_since = now
                    if page.complete or now - waiting_since >= _LOG_GRACE_S:
                        if not newer:
                            return
                        # One attempt at a time: none of their logs is skipped.
                        attempt, offset, waiting_since = (attempt or 0) + 1, 0, None
                        continue
                else:
                    waiting_since = None
            self._sleep(poll_s)

    def wait_job(self, name: str, timeout: float | None = None, poll_s: float = 0.1) -> JobView:
        """Poll until the job is succeeded, failed or cancelled; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            job = self.get_job(name)
            if job.state in TERMINAL_JOB_STATES:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise TimeoutError(
                    f"job {name!r} did not finish within {timeout:g} s (it is {job.state})"
                )
            self._sleep(poll_s)

    # -- endpoints -----------------------------------------------------------------------

    def deploy_endpoint(self, spec: EndpointSpec) -> EndpointView:
        """Create an endpoint in `spec.workspace` when the spec names one, else this client's."""
        path = f"{self._ws(spec.workspace)}/endpoints"
        return self._send(EndpointView, "POST", path, _spec_body(spec))

    def list_endpoints(self) -> list[EndpointView]:
        return list(self._every(EndpointList, f"{self._ws()}/endpoints", {}, lambda p: p.endpoints))

    def get_endpoint(self, name: str) -> EndpointView:
        return self._get(EndpointView, self._endpoint(name))

    def update_endpoint(self, name: str, spec: EndpointSpec) -> EndpointView:
        """Roll out `spec` (the whole spec, not a patch): new replicas replace the old ones
        once ready. A spec equal to the current one changes nothing."""
        path = self._endpoint(name, spec.workspace)
        return self._send(EndpointView, "PUT", path, _spec_body(spec))

    def delete_endpoint(self, name: str) -> EndpointView:
        """Start removing it: its replicas drain, then it is gone (the view says `deleting`)."""
        return self._send(EndpointView, "DELETE", self._endpoint(name), None)

    def wait_endpoint(
        self,
        name: str,
        timeout: float | None = None,
        poll_s: float = 0.5,
        on_poll: Callable[[EndpointView], None] | None = None,
        revision: int | None = None,
    ) -> EndpointView:
        """Poll until the endpoint serves its current revision: `ready`; or `updating` with
        only old replicas left that drain (they take no new requests); or `scaled-to-zero`
        (the first request starts a replica). `on_poll` sees each view on the way; with
        `revision` (an update's), a timeout says that revision did not roll out.

        TimeoutError after `timeout` s, its message saying the state and the server's reason;
        CorralError if the endpoint is being deleted; NotFound if it is gone.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            view = self.get_endpoint(name)
            if on_poll is not None:
                on_poll(view)
            if _serves(view):
                return view
            if view.state == "deleting":
                raise CorralError(f"endpoint {name!r} is being deleted")
            if deadline is not None and self._clock() >= deadline:
                why = f": {view.reason}" if view.reason else ""
                what = "become ready" if revision is None else f"roll out revision {revision}"
                raise TimeoutError(
                    f"endpoint {name!r} did not {what} within {timeout:g} s (it is "
                    f"{view.state}, {view.ready_replicas} of {view.desired_replicas} replicas "
                    f"ready){why}"
                )
            self._sleep(poll_s)

    # -- plumbing ------------------------------------------------------------------------

    def _every(
        self, kind: type[P], path: str, params: dict[str, Any], items: Callable[[P], list[X]]
    ) -> Iterator[X]:
        """Every item of a paged list: the server's own page size first (most lists fit),
        then pages of its largest size."""
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor, "limit": _PAGE_ALL} if cursor else {})}
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
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json, params=params)
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


def _serves(view: EndpointView) -> bool:
    if view.state in ("ready", "scaled-to-zero"):
        return True
    taking = [r for r in view.replicas if r.state != "draining"]
    return (
        view.state == "updating"
        and len(taking) >= max(1, view.desired_replicas)
        and all(r.revision == view.revision and r.state == "ready" for r in taking)
    )


def _spec_body(spec: EndpointSpec) -> Any:
    # Sizes are written as "NMi" and durations as seconds: the server reads back this spec.
    return spec.model_dump(mode="json", exclude_none=True)


# What the API's every answer carries (server/marker.py), and what the gateway's do.
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
        raise NotCorralApi(server, origin.server, what)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        what = f"it answered {request} with HTTP {response.status_code} {response.reason_phrase}"
        raise NotCorralApi(server, origin.server, what)


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
