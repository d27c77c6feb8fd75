"""Issue 9: join tokens expire, run out and can be revoked; an agent refused is told which.
Through the API in-process and through the service with a hand-set clock, on SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.server.auth import AuthFailures, JoinRefusal, JoinTokenRejected, Principal
from corral.server.services.identity import bootstrap
from corral.server.services.join_tokens import (
    consume_join_token,
    create_join_token,
    revoke_join_token,
)
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
INVENTORY = {"hostname": "h", "cpus": 8, "memory_mb": 1000, "disk_mb": 1000}
CLUSTER_ADMIN = Principal("t", "local-admin", "admin", None, None)
DAY = 24 * 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(database_url)
    upgrade(s.engine)
    bootstrap(s, 1000.0, tmp_path, "crl_admin", "crj_join")
    yield s
    s.close()


@pytest.fixture
def api(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    # Refusals here are the point: keep the failed-authentication limit out of the way.
    app = {"clock": clock, "auth_failures": AuthFailures(limit=1000)}
    with in_process(database_url, tmp_path, app=app) as client:
        yield client


def register(api: TestClient, token: str, name: str = "n1") -> Any:
    return api.post(
        "/v1/agent/register", json={"join_token": token, "name": name, "inventory": INVENTORY}
    )


def new_join(api: TestClient, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/join-tokens", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def test_a_new_join_token_lives_a_day_and_allows_any_number_of_nodes(api: TestClient) -> None:
    made = new_join(api)
    assert made["token"].startswith("crj_")
    assert made["expires_at"] == pytest.approx(made["created_at"] + DAY)
    assert made["max_uses"] is None and made["state"] == "active"
    assert made["name"].startswith("join-") and made["token"][-6:] not in made["name"]
    # A bodiless POST (the old client) still works, with the same defaults.
    bare = api.post("/v1/join-tokens", headers=ADMIN).json()
    assert bare["expires_at"] == pytest.approx(bare["created_at"] + DAY)
    for n in range(3):
        assert register(api, made["token"], f"n{n}").status_code == 200


def test_a_used_up_join_token_is_refused_saying_so(api: TestClient) -> None:
    made = new_join(api, name="two-nodes", max_uses=2)
    assert register(api, made["token"], "a").status_code == 200
    assert register(api, made["token"], "b").status_code == 200
    r = register(api, made["token"], "c")
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["reason"] == "used_up" and "used up" in error["message"]
    assert "two-nodes" in error["message"]
    listed = {t["name"]: t for t in api.get("/v1/join-tokens", headers=ADMIN).json()["join_tokens"]}
    assert (listed["two-nodes"]["uses"], listed["two-nodes"]["state"]) == (2, "used_up")
    assert listed["two-nodes"]["token"] is None  # a listing never shows a secret
    assert made["token"] not in api.get("/v1/join-tokens", headers=ADMIN).text


def test_a_revoked_join_token_is_refused_saying_so(api: TestClient) -> None:
    made = new_join(api, name="rack-7")
    assert api.delete("/v1/join-tokens/rack-7", headers=ADMIN).status_code == 204
    r = register(api, made["token"])
    assert r.status_code == 401 and r.json()["error"]["reason"] == "revoked"
    assert "revoked" in r.json()["error"]["message"]
    assert api.delete("/v1/join-tokens/nope", headers=ADMIN).status_code == 404
    # The bootstrap join token of `corral up` never expires and can be revoked too.
    boot = {t["name"]: t for t in api.get("/v1/join-tokens", headers=ADMIN).json()["join_tokens"]}
    assert boot["bootstrap"]["expires_at"] is None and boot["bootstrap"]["state"] == "active"
    assert register(api, "crj_join").status_code == 200


def test_an_expired_join_token_is_refused_saying_so(api: TestClient, clock: Clock) -> None:
    # Made two days ago (on the server's clock) with the default day to live.
    now = clock.t
    clock.t = now - 2 * DAY
    made = new_join(api, name="old")
    clock.t = now
    r = register(api, made["token"])
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "expired" and "expired" in r.json()["error"]["message"]
    listed = api.get("/v1/join-tokens", headers=ADMIN).json()["join_tokens"]
    assert {t["name"]: t["state"] for t in listed}["old"] == "expired"


def test_only_a_cluster_admin_handles_join_tokens(api: TestClient) -> None:
    r = api.post("/v1/tokens", json={"role": "admin", "workspace": "default"}, headers=ADMIN)
    ws_admin = {"Authorization": f"Bearer {r.json()['token']}"}
    assert api.post("/v1/join-tokens", headers=ws_admin).status_code == 403
    assert api.get("/v1/join-tokens", headers=ws_admin).status_code == 403
    assert api.delete("/v1/join-tokens/bootstrap", headers=ws_admin).status_code == 403
    bad = api.post("/v1/join-tokens", json={"max_uses": 0, "ttl_s": -1}, headers=ADMIN)
    assert bad.status_code == 422
    assert {f["path"] for f in bad.json()["error"]["fields"]} == {"max_uses", "ttl_s"}
    assert api.post("/v1/join-tokens", json={"name": "x"}, headers=ADMIN).status_code == 201
    assert api.post("/v1/join-tokens", json={"name": "x"}, headers=ADMIN).status_code == 409
    forever = new_join(api, ttl_s=None)
    assert forever["expires_at"] is None


def test_consume_join_token_counts_uses_and_names_each_refusal(store: Store) -> None:
    t0 = 10_000.0
    with store.transaction() as session:
        limited, limited_secret = create_join_token(
            session, CLUSTER_ADMIN, t0, ttl_s=60.0, max_uses=1, name="one"
        )
        _, revoked_secret = create_join_token(session, CLUSTER_ADMIN, t0, name="gone")
        revoke_join_token(session, CLUSTER_ADMIN, "gone", t0 + 1)

    def refusal(secret: str, now: float) -> JoinRefusal | None:
        try:
            with store.transaction() as session:
                consume_join_token(session, secret, now)
        except JoinTokenRejected as exc:
            return exc.reason
        return None

    assert refusal("crj_nope", t0) is JoinRefusal.UNKNOWN
    assert refusal(revoked_secret, t0 + 2) is JoinRefusal.REVOKED
    assert refusal(limited_secret, t0 + 60) is JoinRefusal.EXPIRED  # at expires_at: over
    assert refusal(limited_secret, t0 + 59) is None
    assert refusal(limited_secret, t0 + 59) is JoinRefusal.USED_UP
    # A registration that fails after the check rolls back, and its use is not counted.
    with store.transaction() as session:
        _, secret = create_join_token(session, CLUSTER_ADMIN, t0, max_uses=1, name="retry")
    with pytest.raises(RuntimeError), store.transaction() as session:
        consume_join_token(session, secret, t0)
        raise RuntimeError("the node's row could not be written")
    assert refusal(secret, t0) is None
    assert limited.uses == 0  # the row as created; the count lives in the store
