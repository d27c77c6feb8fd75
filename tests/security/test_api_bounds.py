"""Issue 9: the API refuses bodies and header lists too big to hold, and slows down a client
that guesses tokens. The app in-process (SQLite and PostgreSQL) and the pure bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.server.app import MAX_BODY_BYTES
from corral.server.auth import AuthFailures
from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
JOBS = "/v1/workspaces/default/jobs"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path, client=("192.0.2.1", 40000)) as client:
        yield client


def from_address(api: TestClient, host: str) -> TestClient:
    # Another client of the same running app (its lifespan is the first client's).
    return TestClient(api.app, client=(host, 40000))


def test_a_body_announced_over_the_limit_is_413_before_it_is_read(api: TestClient) -> None:
    r = api.post(JOBS, content=b"x" * (MAX_BODY_BYTES + 1), headers=ADMIN)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    assert str(MAX_BODY_BYTES) in r.json()["error"]["message"]
    assert r.headers["connection"] == "close"


def test_a_chunked_body_over_the_limit_is_413(api: TestClient) -> None:
    piece = b"x" * (1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // len(piece) + 1):
            yield piece

    r = api.post(JOBS, content=chunks(), headers=ADMIN)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_a_chunked_body_within_the_limit_reaches_the_api(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "chunked", '
        yield b'"command": "true"}'

    r = api.post(JOBS, content=chunks(), headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "chunked"


def test_too_many_headers_is_431(api: TestClient) -> None:
    many = {f"x-h{i}": "v" for i in range(150)}
    r = api.get("/v1/whoami", headers={**ADMIN, **many})
    assert r.status_code == 431 and r.json()["error"]["code"] == "too_large"
    assert api.get("/v1/whoami", headers=ADMIN).status_code == 200


def test_guessing_tokens_is_cut_off_for_that_address_only(api: TestClient) -> None:
    limit = AuthFailures().limit
    for n in range(limit):
        r = api.get("/v1/whoami", headers={"Authorization": f"Bearer crl_guess{n}"})
        assert r.status_code == 401
    r = api.get("/v1/whoami", headers={"Authorization": "Bearer crl_guess-more"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # A right token this server has not seen lately waits too: a guesser cannot tell it hit.
    assert api.get("/v1/whoami", headers=ADMIN).status_code == 429
    # Bad join tokens count the same way.
    other = from_address(api, "192.0.2.2")
    assert other.get("/v1/whoami", headers=ADMIN).status_code == 200
    for n in range(limit):
        inventory = {"hostname": "h", "cpus": 1, "memory_mb": 1, "disk_mb": 1}
        body = {"join_token": f"crj_{n}", "name": "n", "inventory": inventory}
        assert other.post("/v1/agent/register", json=body).status_code == 401
    guess = {"Authorization": "Bearer crl_guess-again"}
    assert other.get("/v1/whoami", headers=guess).status_code == 429
    # But a token in use (accepted moments ago) still works from a blocked address: every
    # process of one node shares its address, and one tenant's guesses must not lock the
    # gateway, the CLI or the other tenants out.
    assert other.get("/v1/whoami", headers=ADMIN).status_code == 200
    assert from_address(api, "192.0.2.3").get("/v1/whoami", headers=ADMIN).status_code == 200


# -- the bookkeeping, on a hand-set clock ------------------------------------------------


def test_failures_block_after_the_limit_until_the_window_ends() -> None:
    f = AuthFailures(limit=3, window_s=60.0)
    for t in (0.0, 10.0):
        f.failed("a", t)
    assert f.retry_after("a", 11.0) == 0.0
    f.failed("a", 20.0)
    assert f.retry_after("a", 20.0) == 40.0  # the window opened at the first failure
    assert f.retry_after("b", 20.0) == 0.0
    assert f.retry_after("a", 59.5) == 0.5
    assert f.retry_after("a", 60.0) == 0.0  # a fresh window
    f.failed("a", 61.0)
    assert f.retry_after("a", 61.0) == 0.0


def test_failures_spread_beyond_the_window_never_block() -> None:
    f = AuthFailures(limit=3, window_s=60.0)
    for t in range(0, 600, 30):
        f.failed("a", float(t))
        assert f.retry_after("a", float(t)) == 0.0


def test_the_bookkeeping_stays_bounded_whatever_the_addresses() -> None:
    f = AuthFailures(limit=2, window_s=60.0, max_clients=100)
    for n in range(10_000):
        f.failed(f"10.0.{n // 256}.{n % 256}", 1.0)
        assert len(f) <= 100
    # The newest are remembered; the oldest were forgotten to make room.
    f.failed("10.0.39.15", 2.0)
    assert f.retry_after("10.0.39.15", 2.0) > 0
    assert f.retry_after("10.0.0.0", 2.0) == 0.0
