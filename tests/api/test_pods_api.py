"""The pod, SSH key and volume API in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
WS = "/v1/workspaces/default"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def token(api: TestClient, role: str, workspace: str = "default") -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": role, "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def refusal(api: TestClient, path: str, headers: dict[str, str]) -> WebSocketDenialResponse:
    """The HTTP answer that refused a relay WebSocket before it opened."""
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        api.websocket_connect(path, headers=headers),
    ):
        pass
    return denied.value


def public_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key("openssh").decode().strip()


def test_a_pod_is_created_listed_stopped_started_and_deleted(api: TestClient) -> None:
    r = api.post(f"{WS}/pods", json={"name": "dev", "idle_stop": "30m"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    pod = r.json()
    assert pod["state"] == "pending" and pod["spec"]["idle_stop"] == 1800
    assert [e["kind"] for e in pod["events"]] == ["start"]
    assert api.post(f"{WS}/pods", json={"name": "dev"}, headers=ADMIN).status_code == 409
    names = [p["name"] for p in api.get(f"{WS}/pods", headers=ADMIN).json()["pods"]]
    assert names == ["dev"]
    # Its run is a job, but not one the user submitted: `job ls` leaves it out.
    jobs = api.get(f"{WS}/jobs", params={"kind": "job"}, headers=ADMIN).json()["jobs"]
    assert jobs == []
    stopped = api.post(f"{WS}/pods/dev/stop", headers=ADMIN).json()
    assert stopped["state"] == "stopped"
    assert stopped["stop_reason"].startswith("stopped by ")
    started = api.post(f"{WS}/pods/dev/start", headers=ADMIN).json()
    assert started["state"] == "pending" and started["stop_reason"] is None
    assert [e["kind"] for e in started["events"]] == ["start", "stop", "start"]
    assert api.delete(f"{WS}/pods/dev", headers=ADMIN).status_code == 204
    assert api.get(f"{WS}/pods/dev", headers=ADMIN).status_code == 404
    # The name is free again at once, though the old run may still be stopping.
    assert api.post(f"{WS}/pods", json={"name": "dev"}, headers=ADMIN).status_code == 201


def test_bad_pod_specs_name_the_field(api: TestClient) -> None:
    r = api.post(f"{WS}/pods", json={"name": "x", "idle_stop": "soon"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "idle_stop"
    r = api.post(f"{WS}/pods", json={"name": "x", "volumes": {"data": "rel"}}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "volumes"
    r = api.post(f"{WS}/pods", json={"name": "x", "volumes": {"nope": "/data"}}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["path"] == "volumes.nope"
    assert "corral volume create nope" in r.json()["error"]["message"]


def test_viewers_list_pods_and_cannot_change_or_enter_them(api: TestClient) -> None:
    assert api.post(f"{WS}/pods", json={"name": "dev"}, headers=ADMIN).status_code == 201
    viewer = token(api, "viewer")
    assert api.get(f"{WS}/pods", headers=viewer).status_code == 200
    assert api.get(f"{WS}/pods/dev", headers=viewer).status_code == 200
    assert api.post(f"{WS}/pods/dev/stop", headers=viewer).status_code == 403
    assert api.post(f"{WS}/pods", json={"name": "v"}, headers=viewer).status_code == 403
    key = {"name": "k", "public_key": public_key()}
    assert api.post(f"{WS}/ssh-keys", json=key, headers=viewer).status_code == 403
    denied = refusal(api, f"{WS}/pods/dev/relay", viewer)
    assert denied.status_code == 403
    assert "member role" in denied.json()["error"]["message"]


def test_a_session_into_a_pod_that_does_not_run_is_refused_with_its_state(
    api: TestClient,
) -> None:
    member = token(api, "member")
    api.post(f"{WS}/ssh-keys", json={"name": "k", "public_key": public_key()}, headers=member)
    assert api.post(f"{WS}/pods", json={"name": "dev"}, headers=member).status_code == 201
    denied = refusal(api, f"{WS}/pods/dev/relay", member)
    assert denied.status_code == 409
    assert "waiting to be placed" in denied.json()["error"]["message"]
    denied = refusal(api, f"{WS}/pods/nope/relay", member)
    assert denied.status_code == 404
    # Another workspace's token is refused before anything about the pod is looked up.
    api.post("/v1/workspaces", json={"name": "team-b"}, headers=ADMIN)
    other = token(api, "member", "team-b")
    denied = refusal(api, f"{WS}/pods/dev/relay", other)
    assert denied.status_code == 403


def test_ssh_keys_are_checked_and_the_host_key_is_stable(api: TestClient) -> None:
    line = public_key()
    r = api.post(f"{WS}/ssh-keys", json={"name": "laptop", "public_key": line}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["fingerprint"].startswith("SHA256:")
    again = api.post(f"{WS}/ssh-keys", json={"name": "other", "public_key": line}, headers=ADMIN)
    assert again.status_code == 409 and "'laptop'" in again.json()["error"]["message"]
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    r = api.post(f"{WS}/ssh-keys", json={"name": "p", "public_key": private}, headers=ADMIN)
    assert r.status_code == 422 and "private key" in r.json()["error"]["message"]
    r = api.post(f"{WS}/ssh-keys", json={"name": "g", "public_key": "hello"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "public_key"
    assert [k["name"] for k in api.get(f"{WS}/ssh-keys", headers=ADMIN).json()["keys"]] == [
        "laptop"
    ]
    first = api.get(f"{WS}/ssh/host-key", headers=ADMIN).json()["public_key"]
    assert first.startswith("ssh-ed25519 ")
    assert api.get(f"{WS}/ssh/host-key", headers=ADMIN).json()["public_key"] == first
    assert api.delete(f"{WS}/ssh-keys/laptop", headers=ADMIN).status_code == 204
    assert api.delete(f"{WS}/ssh-keys/laptop", headers=ADMIN).status_code == 404


def test_a_volume_in_use_cannot_be_deleted(api: TestClient) -> None:
    assert api.post(f"{WS}/volumes", json={"name": "data"}, headers=ADMIN).status_code == 201
    assert api.post(f"{WS}/volumes", json={"name": "data"}, headers=ADMIN).status_code == 409
    spec = {"name": "dev", "volumes": {"data": "/data"}}
    assert api.post(f"{WS}/pods", json=spec, headers=ADMIN).status_code == 201
    vols = api.get(f"{WS}/volumes", headers=ADMIN).json()["volumes"]
    assert vols[0]["used_by"] == ["pod 'dev'"]
    r = api.delete(f"{WS}/volumes/data", headers=ADMIN)
    assert r.status_code == 409 and "pod 'dev'" in r.json()["error"]["message"]
    api.post(f"{WS}/pods/dev/stop", headers=ADMIN)
    assert api.delete(f"{WS}/volumes/data", headers=ADMIN).status_code == 204
    # A job may mount volumes too, and only ones that exist.
    job = {"command": "true", "volumes": {"data": "/data"}}
    r = api.post(f"{WS}/jobs", json=job, headers=ADMIN)
    assert r.status_code == 422 and "volume create data" in r.json()["error"]["message"]
