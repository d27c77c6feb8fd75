"""Listing through the API, on SQLite and PostgreSQL: newest first, filters, cursor pages on
every list, one error shape for a bad limit, cursor or state, and no workspace seeing
another's jobs."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
JOBS = "/v1/workspaces/default/jobs"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def token(api: TestClient, role: str, workspace: str) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def submit(api: TestClient, name: str, workspace: str = "default", **spec: Any) -> None:
    body = {"name": name, "command": "true", **spec}
    r = api.post(f"/v1/workspaces/{workspace}/jobs", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


def pages(
    api: TestClient, path: str, key: str, limit: int, field: str = "name", **params: Any
) -> list[list[str]]:
    """Every page of a list, as names (or `field`), following next_cursor."""
    found: list[list[str]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        r = api.get(path, params=query, headers=ADMIN)
        assert r.status_code == 200, r.text
        body = r.json()
        found.append([item[field] for item in body[key]])
        cursor = body["next_cursor"]
        if cursor is None:
            return found
        assert len(found) < 100, "the cursor does not move on"


def test_jobs_are_listed_newest_first_a_page_at_a_time(api: TestClient) -> None:
    for i in range(7):
        submit(api, f"j{i}")
    assert pages(api, JOBS, "jobs", 3) == [["j6", "j5", "j4"], ["j3", "j2", "j1"], ["j0"]]
    # The default page holds them all, and says there is no more.
    body = api.get(JOBS, headers=ADMIN).json()
    assert [j["name"] for j in body["jobs"]] == [f"j{i}" for i in range(6, -1, -1)]
    assert body["next_cursor"] is None


def test_a_job_submitted_between_pages_neither_repeats_nor_hides_older_ones(
    api: TestClient,
) -> None:
    for i in range(4):
        submit(api, f"j{i}")
    first = api.get(JOBS, params={"limit": 2}, headers=ADMIN).json()
    submit(api, "late")
    second = api.get(JOBS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=ADMIN)
    assert [j["name"] for j in second.json()["jobs"]] == ["j1", "j0"]


def test_filters_by_state_and_kind(api: TestClient) -> None:
    for name in ("a", "b", "c"):
        submit(api, name)
    assert api.post(f"{JOBS}/b/cancel", headers=ADMIN).json()["state"] == "cancelled"

    def names(**params: Any) -> list[str]:
        r = api.get(JOBS, params=params, headers=ADMIN)
        assert r.status_code == 200, r.text
        return [j["name"] for j in r.json()["jobs"]]

    assert names(state="pending") == ["c", "a"]
    assert names(state="cancelled") == ["b"]
    assert names(state=["cancelled", "pending"]) == ["c", "b", "a"]
    assert names(state="running") == []
    assert names(kind="job") == ["c", "b", "a"]
    assert names(kind="endpoint-replica") == []
    # An endpoint's replicas are jobs too: kind tells them apart.
    ep = {"name": "ep", "command": "serve"}
    assert api.post("/v1/workspaces/default/endpoints", json=ep, headers=ADMIN).status_code == 201
    deadline = time.monotonic() + 20
    while not names(kind="endpoint-replica"):
        assert time.monotonic() < deadline, "the endpoint controller made no replica job"
        time.sleep(0.05)
    replicas = api.get(JOBS, params={"kind": "endpoint-replica"}, headers=ADMIN).json()["jobs"]
    assert all(j["endpoint"] == "ep" for j in replicas)
    assert names(kind="job") == ["c", "b", "a"]
    assert len(names()) == 3 + len(replicas)


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJhIl0"}, "cursor"),  # valid base64 of ["a"]: not this list's key
        # The right shape, but nothing a database can compare with (was a 500).
        ({"cursor": _cursor('[1.0,"\\ud800"]')}, "cursor"),
        ({"cursor": _cursor('[1.0,"a\\u0000b"]')}, "cursor"),
        ({"cursor": _cursor('[1e400,"a"]')}, "cursor"),
        ({"state": "sleeping"}, "state[0]"),
        ({"kind": "pod"}, "kind"),
    ],
)
def test_a_bad_listing_parameter_is_a_422_naming_it(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    r = api.get(JOBS, params=params, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert [f["path"] for f in r.json()["error"]["fields"]] == [field]


def test_every_list_pages_with_the_same_cursor_shape(api: TestClient) -> None:
    for name in ("team-a", "team-b", "team-c"):
        assert api.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201
    for name in ("k1", "k2", "k3"):
        r = api.put(f"/v1/workspaces/default/secrets/{name}", json={"value": "v"}, headers=ADMIN)
        assert r.status_code == 201, r.text
    for ws in ("team-a", "team-b"):
        token(api, "member", ws)
    assert pages(api, "/v1/workspaces", "workspaces", 2) == [
        ["default", "team-a"],
        ["team-b", "team-c"],
    ]
    assert pages(api, "/v1/workspaces/default/secrets", "secrets", 2) == [["k1", "k2"], ["k3"]]
    quotas = pages(api, "/v1/quotas", "quotas", 3, field="workspace")
    assert quotas == [["default", "team-a", "team-b"], ["team-c"]]
    tokens = [n for page in pages(api, "/v1/tokens", "tokens", 1) for n in page]
    assert len(tokens) == 3 and tokens[0] == "local-admin"  # the cluster's first
    assert pages(api, "/v1/nodes", "nodes", 5) == [[]]
    for name in ("join-a", "join-b"):
        r = api.post("/v1/join-tokens", json={"name": name}, headers=ADMIN)
        assert r.status_code == 201, r.text
    joins = pages(api, "/v1/join-tokens", "join_tokens", 1)
    assert [n for page in joins for n in page][-2:] == ["join-a", "join-b"]
    assert all(len(page) <= 1 for page in joins)
    for name in ("ep-a", "ep-b", "ep-c"):
        r = api.post(
            "/v1/workspaces/default/endpoints", json={"name": name, "command": "s"}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
    endpoints = "/v1/workspaces/default/endpoints"
    assert pages(api, endpoints, "endpoints", 2) == [["ep-a", "ep-b"], ["ep-c"]]
    lists = (
        "/v1/workspaces",
        "/v1/tokens",
        "/v1/nodes",
        "/v1/join-tokens",
        endpoints,
        "/v1/quotas",
    )
    for path in (*lists, "/v1/workspaces/default/secrets", JOBS, "/v1/jobs"):
        r = api.get(path, params={"cursor": "%%%"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "cursor"


def test_jobs_across_workspaces_for_an_admin_and_only_its_own_for_a_member(
    api: TestClient,
) -> None:
    for name in ("team-a", "team-b"):
        api.post("/v1/workspaces", json={"name": name}, headers=ADMIN)
    submit(api, "a1", "team-a")
    submit(api, "b1", "team-b")
    submit(api, "a2", "team-a")
    every = api.get("/v1/jobs", headers=ADMIN).json()["jobs"]
    assert [(j["workspace"], j["name"]) for j in every] == [
        ("team-a", "a2"),
        ("team-b", "b1"),
        ("team-a", "a1"),
    ]
    only_b = api.get("/v1/jobs", params={"workspace": "team-b"}, headers=ADMIN).json()["jobs"]
    assert [j["name"] for j in only_b] == ["b1"]
    assert pages(api, "/v1/jobs", "jobs", 2) == [["a2", "b1"], ["a1"]]
    member = token(api, "member", "team-a")
    mine = api.get("/v1/jobs", headers=member).json()["jobs"]
    assert [j["name"] for j in mine] == ["a2", "a1"]
    refused = api.get("/v1/jobs", params={"workspace": "team-b"}, headers=member)
    assert refused.status_code == 403
    missing = api.get("/v1/jobs", params={"workspace": "nope"}, headers=ADMIN)
    assert missing.status_code == 404
    many = api.get("/v1/jobs", params={"workspace": [f"w{i}" for i in range(101)]}, headers=ADMIN)
    assert many.status_code == 422
    assert many.json()["error"]["fields"][0]["path"] == "workspace"


def test_all_logs_of_a_pending_job_say_why_it_waits(api: TestClient) -> None:
    submit(api, "wait", replicas=3)
    body = api.get(f"{JOBS}/wait/logs/all", headers=ADMIN).json()
    assert body["state"] == "pending" and body["reason"]
    assert body["job_attempt"] == 0 and body["replicas"] == 3
    assert [p["replica"] for p in body["pages"]] == [0, 1, 2]
    assert not any(p["complete"] or p["data"] for p in body["pages"])
    too_many = api.get(f"{JOBS}/wait/logs/all", params={"offset": [0, 0, 0, 0]}, headers=ADMIN)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["fields"][0]["path"] == "offset"
    negative = api.get(f"{JOBS}/wait/logs/all", params={"offset": -1}, headers=ADMIN)
    assert negative.status_code == 422
