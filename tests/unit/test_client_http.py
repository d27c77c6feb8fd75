"""The SDK against httpx.MockTransport: what goes on the wire and how answers are mapped."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import corral.client
from corral.client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    ProtocolError,
    ServerFailure,
    ServerUnreachable,
    Unauthorized,
)
from corral.spec import JobSpec

SERVER = "http://corral.test:7390"
Handler = Callable[[httpx.Request], httpx.Response]


def job_body(name: str = "train", state: str = "pending", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "workspace": "default",
        "state": state,
        "spec": {
            "name": name,
            "command": "python train.py",
            "resources": {
                "memory": "4096Mi",
                "gpus": {"count": 8, "type": "H100", "min_memory": "81920Mi"},
            },
        },
        "attempt": 1 if state != "pending" else 0,
        "restarts": 0,
        "submitted_at": 1000.0,
    }
    body.update(over)
    return body


def client(handler: Handler, token: str | None = "crl_secret", **kw: Any) -> Client:
    return Client(SERVER, token, "default", transport=httpx.MockTransport(handler), **kw)


def error(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "fields": fields or []}}
    )


def test_public_surface() -> None:
    assert set(corral.client.__all__) >= {
        "Client",
        "ApiError",
        "CorralError",
        "ServerUnreachable",
        "NotFound",
        "Conflict",
        "Unauthorized",
        "Forbidden",
        "BadRequest",
        "resolve_settings",
    }
    for name in corral.client.__all__:
        assert hasattr(corral.client, name)


def test_every_request_carries_the_bearer_token_and_the_workspace_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": [job_body()]})

    with client(handler) as c:
        jobs = c.list_jobs()
    assert [j.name for j in jobs] == ["train"]
    assert seen[0].headers["authorization"] == "Bearer crl_secret"
    assert seen[0].url.path == "/v1/workspaces/default/jobs"
    assert seen[0].headers["user-agent"].startswith("corral-python/")


def test_no_token_sends_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    assert client(handler, token=None).health() is True
    assert "authorization" not in seen[0].headers


def test_submit_sends_sizes_with_units_and_reads_them_back_in_mib() -> None:
    # A bare number in a spec means GiB, so sizes travel as "NMi" both ways.
    posted: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(201, json=job_body())

    spec = JobSpec(
        name="train",
        command="python train.py",
        resources={"memory": "4Gi", "gpus": {"count": 8, "type": "H100", "min_memory": "80Gi"}},
    )
    view = client(handler).submit_job(spec)
    body = posted[0]
    assert body["resources"]["memory"] == "4096Mi"
    assert body["resources"]["gpus"]["min_memory"] == "81920Mi"
    assert JobSpec.model_validate(body) == spec
    # The view holds the same MiB, not 1024 times more.
    assert view.spec.resources.memory == 4096
    assert view.spec.resources.gpus.min_memory == 81920


def test_submit_goes_to_the_specs_own_workspace_when_it_names_one() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(201, json=job_body())

    client(handler).submit_job(JobSpec(command="true", workspace="research"))
    assert paths == ["/v1/workspaces/research/jobs"]


def test_conflict_maps_to_a_readable_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return error(409, "conflict", "job 'x' already exists in workspace 'default'")

    with pytest.raises(Conflict) as info:
        client(handler).submit_job(JobSpec(name="x", command="true"))
    assert info.value.status == 409 and info.value.code == "conflict"
    assert str(info.value) == "job 'x' already exists in workspace 'default'"


def test_invalid_spec_lists_every_field_once() -> None:
    fields = [
        {"path": "resources.gpus", "message": "bad count"},
        {"path": "replicsa", "message": "unknown field"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return error(422, "invalid", "invalid request: resources.gpus: bad count", fields)

    with pytest.raises(BadRequest) as info:
        client(handler).submit_job(JobSpec(command="true"))
    assert [(f.path, f.message) for f in info.value.fields] == [
        ("resources.gpus", "bad count"),
        ("replicsa", "unknown field"),
    ]
    text = str(info.value)
    assert text.count("resources.gpus: bad count") == 1
    assert "replicsa: unknown field" in text


@pytest.mark.parametrize(
    ("status", "kind"), [(401, Unauthorized), (404, NotFound), (400, BadRequest), (418, ApiError)]
)
def test_statuses_map_to_their_error_class(status: int, kind: type[ApiError]) -> None:
    c = client(lambda r: error(status, "some_code", "nope"))
    with pytest.raises(kind) as info:
        c.get_job("x")
    assert info.value.status == status and info.value.message.endswith("nope")


def test_a_5xx_without_json_is_a_server_failure_with_the_body_text() -> None:
    c = client(lambda r: httpx.Response(502, text="upstream connect error"))
    with pytest.raises(ServerFailure) as info:
        c.list_nodes()
    assert info.value.status == 502
    assert "upstream connect error" in str(info.value)


def test_a_plain_fastapi_404_is_still_readable() -> None:
    # corral's own answer for a route it lacks (an older server): marked as corral's API.
    c = client(
        lambda r: httpx.Response(404, json={"detail": "Not Found"}, headers={"corral-api": "1"})
    )
    with pytest.raises(NotFound, match="Not Found"):
        c.whoami()


def test_a_non_json_success_is_a_protocol_error() -> None:
    c = client(lambda r: httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(ProtocolError, match="corral server"):
        c.list_jobs()


def test_a_view_missing_fields_is_a_protocol_error_not_a_pydantic_one() -> None:
    c = client(lambda r: httpx.Response(200, json={"jobs": [{"name": "x"}]}))
    with pytest.raises(ProtocolError, match="JobList"):
        c.list_jobs()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_says_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with Client(url, "t") as c, pytest.raises(ServerUnreachable) as info:
        c.list_jobs()
    message = str(info.value)
    assert url in message
    assert "corral up" in message and "CORRAL_SERVER" in message
    assert Client(url).health() is False


def test_a_timeout_is_a_connection_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ConnectionFailed, match="no answer within 2 s"):
        client(handler, timeout=2.0).list_jobs()


def test_create_token_sends_only_what_was_given() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(
            201,
            json={
                "name": "ci",
                "role": "viewer",
                "workspace": None,
                "created_at": 1.0,
                "token": "crl_new",
            },
        )

    tok = client(handler).create_token(role="viewer", name="ci")
    assert bodies == [{"name": "ci", "role": "viewer"}]
    assert tok.token == "crl_new"


def test_delete_and_cancel_use_the_right_verbs() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=job_body(state="cancelling"))

    c = client(handler)
    assert c.cancel_job("train").state == "cancelling"
    assert c.delete_job("train") is None
    assert seen == [
        ("POST", "/v1/workspaces/default/jobs/train/cancel"),
        ("DELETE", "/v1/workspaces/default/jobs/train"),
    ]


class FakeLogs:
    """A job whose replica-0 log grows page by page, then restarts once, then ends."""

    def __init__(self, attempts: dict[int, list[str]], restart_after_first: bool) -> None:
        self.attempts = attempts
        self.job_attempt = 1
        self.state = "running"
        self.requests: list[dict[str, str]] = []
        self.restart_after_first = restart_after_first

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            q = dict(request.url.params)
            self.requests.append(q)
            attempt = int(q.get("attempt", self.job_attempt))
            offset = int(q["offset"])
            pages = self.attempts[attempt]
            text = "".join(pages)
            # One page per request: the chunk that starts at `offset`.
            chunk = ""
            pos = 0
            for page in pages:
                if pos == offset:
                    chunk = page
                    break
                pos += len(page)
            done = offset + len(chunk) >= len(text)
            complete = done and (attempt < self.job_attempt or self.state == "succeeded")
            if done and attempt == self.job_attempt and self.state == "running":
                # The replica ends once its whole log has been read; then it restarts or ends.
                if self.restart_after_first and attempt == 1:
                    self.job_attempt = 2
                else:
                    self.state = "succeeded"
            return httpx.Response(
                200,
                json={
                    "replica": 0,
                    "attempt": attempt,
                    "data": chunk,
                    "offset": offset,
                    "next_offset": offset + len(chunk),
                    "complete": complete,
                },
            )
        return httpx.Response(200, json=job_body(state=self.state, attempt=self.job_attempt))


def test_follow_logs_reads_on_from_next_offset_until_complete() -> None:
    fake = FakeLogs({1: ["one\n", "two\n", "three\n"]}, restart_after_first=False)
    c = client(fake.handler)
    c._sleep = lambda s: None
    assert list(c.follow_logs("train", poll_s=0)) == ["one\n", "two\n", "three\n"]
    offsets = [int(r["offset"]) for r in fake.requests]
    assert offsets[:3] == [0, 4, 8]
    assert all(o <= 14 for o in offsets)


def test_follow_logs_reads_each_attempt_to_its_end_then_the_next_from_zero() -> None:
    fake = FakeLogs({1: ["a1\n", "crash\n"], 2: ["a2\n", "done\n"]}, restart_after_first=True)
    c = client(fake.handler)
    c._sleep = lambda s: None
    pages = list(c.follow_log_pages("train", poll_s=0))
    assert [(p.attempt, p.data) for p in pages] == [
        (1, "a1\n"),
        (1, "crash\n"),
        (2, "a2\n"),
        (2, "done\n"),
    ]
    second = [r for r in fake.requests if r.get("attempt") == "2"]
    assert second and second[0]["offset"] == "0"


def test_follow_logs_ends_for_a_job_that_ended_before_it_started() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return httpx.Response(
                200,
                json={
                    "replica": 0,
                    "attempt": 0,
                    "data": "",
                    "offset": 0,
                    "next_offset": 0,
                    "complete": True,
                },
            )
        return httpx.Response(200, json=job_body(state="cancelled"))

    assert list(client(handler).follow_logs("train", poll_s=0)) == []


def test_wait_job_polls_until_terminal_and_times_out_otherwise() -> None:
    states = iter(["pending", "running", "succeeded"])
    c = client(lambda r: httpx.Response(200, json=job_body(state=next(states))))
    c._sleep = lambda s: None
    assert c.wait_job("train", poll_s=0).state == "succeeded"

    clock = iter(float(t) for t in range(100))
    stuck = client(lambda r: httpx.Response(200, json=job_body(state="running")))
    stuck._sleep = lambda s: None
    stuck._clock = lambda: next(clock)
    with pytest.raises(TimeoutError, match="did not finish within 5 s"):
        stuck.wait_job("train", timeout=5)
