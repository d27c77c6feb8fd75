"""Issue 10 item 2 through the server: after `corral quota set team-a --gpus H100:4` on an
8-GPU fleet, the default workspace (no quota) still places a non-preemptible 1-GPU job on
the 4 GPUs nobody is guaranteed; one larger than that waits, saying which limit binds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.app import in_process
from support.cluster import wait_for
from support.store import register_node

ADMIN = {"Authorization": "Bearer crl_admin"}
JOBS = "/v1/workspaces/default/jobs"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def _until(api: TestClient, name: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"{JOBS}/{name}", headers=ADMIN).json()
        return job if done(job) else None

    return wait_for(f"job {name}", probe, timeout=30)


def test_a_quota_on_team_a_leaves_default_the_unguaranteed_gpus(api: TestClient) -> None:
    register_node(api.app.state.cp.store, "n1", gpus=8)  # type: ignore[attr-defined]
    assert api.post("/v1/workspaces", json={"name": "team-a"}, headers=ADMIN).status_code == 201
    r = api.put("/v1/workspaces/team-a/quota", json={"gpus": {"H100": 4}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    for name, gpus in (("chat", "1"), ("big", "H100:5")):
        spec = {"name": name, "command": "true", "resources": {"gpus": gpus}}
        assert api.post(JOBS, json=spec, headers=ADMIN).status_code == 201
    chat = _until(api, "chat", lambda j: j["state"] != "pending")
    assert chat["state"] == "starting" and not chat["borrowed"], chat
    big = _until(api, "big", lambda j: "unguaranteed" in (j["reason"] or ""))
    assert big["state"] == "pending"
    assert big["reason"] == (
        "workspace default is guaranteed 0 H100 and the ready fleet leaves 4 H100 "
        "unguaranteed; this non-preemptible job needs 5: mark it preemptible to borrow "
        "idle GPUs"
    )
