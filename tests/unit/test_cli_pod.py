"""`corral pod|ssh-key|volume` against a fake of the pods API (httpx.MockTransport): the spec
`pod create` sends from its flags and file, how `pod ls|get` render the server's views, and
the public-key check of `ssh-key add`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.cli.output import CliError
from corral.cli.pod import PodFlags, build_pod_spec
from corral.client import Client, Settings
from corral.spec.errors import SpecError

WS = "/v1/workspaces/team"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheWorkspaceForTests00000000000 host"


class FakeApi:
    """Pods, keys and volumes of workspace `team`, as the contract's REST API answers."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.keys: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []
        self.sent: list[tuple[str, str, Any]] = []
        self.state_after_create = "running"

    def pod(self, name: str, spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
        view = {
            "name": name,
            "workspace": "team",
            "state": "running",
            "spec": spec,
            "node": "gpu-1",
            "gpus": [0],
            "created_at": time.time() - 3600,
            "started_at": time.time() - 3500,
            "sessions": 1,
            "idle_stop_at": time.time() + 7200,
            **fields,
        }
        self.pods[name] = view
        return view

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.sent.append((request.method, path, body))
        if request.headers.get("Authorization") != "Bearer tok":
            return _error(401, "bad token")
        route = (request.method, path.removeprefix(WS))
        if route == ("POST", "/pods"):
            if body["name"] in self.pods:
                return _error(409, f"pod {body['name']} exists")
            return httpx.Response(
                201, json=self.pod(body["name"], body, state=self.state_after_create)
            )
        if route == ("GET", "/pods"):
            return httpx.Response(200, json={"pods": list(self.pods.values())})
        if request.method == "GET" and route[1].startswith("/pods/"):
            name = route[1].split("/")[2]
            if name not in self.pods:
                return _error(404, f"no pod {name} in workspace team")
            return httpx.Response(200, json=self.pods[name])
        if route == ("GET", "/ssh/host-key"):
            return httpx.Response(200, json={"workspace": "team", "public_key": HOST_KEY})
        if route == ("GET", "/ssh-keys"):
            return httpx.Response(200, json={"keys": self.keys})
        if route == ("POST", "/ssh-keys"):
            key = {
                **body,
                "workspace": "team",
                "fingerprint": "SHA256:x",
                "added_by": "ann",
                "created_at": time.time(),
            }
            self.keys.append(key)
            return httpx.Response(201, json=key)
        if route == ("POST", "/volumes"):
            vol = {**body, "workspace": "team", "created_at": time.time(), "used_by": []}
            self.volumes.append(vol)
            return httpx.Response(201, json=vol)
        if route == ("DELETE", "/volumes/data"):
            return _error(409, "volume data is mounted by pod dev")
        return _error(404, f"no route {request.method} {path}")


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": {"code": "x", "message": message, "fields": []}},
        headers={"corral-api": "1"},
    )


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def run(api: FakeApi, home: Path, *args: str) -> Result:
    def factory(settings: Settings) -> Client:
        return Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=httpx.MockTransport(api.handle),
        )

    app = build_app(CliDeps(client_factory=factory, home=home))
    env = {"CORRAL_TOKEN": "tok", "CORRAL_WORKSPACE": "team", "NO_COLOR": "1", "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path / "corral-home"


# -- pod create: flags -> spec ----------------------------------------------------------------


def test_create_flags_become_the_spec(api: FakeApi, home: Path) -> None:
    result = run(
        api,
        home,
        "pod",
        "create",
        "dev",
        "--gpus",
        "H100:1",
        "--cpus",
        "8",
        "--memory",
        "16Gi",
        "--env",
        "A=1",
        "--volume",
        "data:/data",
        "--idle-stop",
        "30m",
        "--jupyter",
    )
    assert result.exit_code == 0, result.output
    method, path, body = api.sent[0]
    assert (method, path) == ("POST", f"{WS}/pods")
    assert body["name"] == "dev"
    assert body["resources"]["gpus"] == {"count": 1, "type": "H100"}
    assert body["resources"]["cpus"] == 8
    assert body["env"] == {"A": "1"}
    assert body["volumes"] == {"data": "/data"}
    assert body["idle_stop"] == 1800
    assert body["jupyter"] is True
    # The next steps: ssh, exec, and the jupyter forward.
    assert "corral pod ssh dev" in result.output
    assert "corral pod forward dev 8888" in result.output


def test_create_from_a_file_with_flags_over_it(tmp_path: Path) -> None:
    file = tmp_path / "pod.yaml"
    file.write_text("kind: pod\nname: dev\nresources: {gpus: H100:2}\nidle_stop: never\n")
    spec = build_pod_spec(None, str(file), PodFlags(gpus="A100:1", env=["B=2"]), environ={})
    assert spec.name == "dev"
    assert str(spec.resources.gpus) == "A100:1"
    assert spec.idle_stop is None
    assert spec.env == {"B": "2"}


def test_create_bad_flags_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="--volume data: expected NAME:/path"):
        build_pod_spec("dev", None, PodFlags(volume=["data"]), environ={})
    with pytest.raises(SpecError) as caught:
        build_pod_spec("dev", None, PodFlags(volume=["data:/proc/x"]), environ={})
    assert str(caught.value.errors[0]).startswith("--volume")
    with pytest.raises(SpecError) as caught:
        build_pod_spec("dev", None, PodFlags(idle_stop="soon"), environ={})
    assert str(caught.value.errors[0]).startswith("--idle-stop")


def test_create_file_and_name_must_agree(tmp_path: Path) -> None:
    file = tmp_path / "pod.yaml"
    file.write_text("name: other\n")
    with pytest.raises(CliError, match="describes pod 'other', not 'dev'"):
        build_pod_spec("dev", str(file), PodFlags(), environ={})


def test_create_that_stays_pending_says_so_after_the_deadline(api: FakeApi, home: Path) -> None:
    api.state_after_create = "pending"

    def factory(settings: Settings) -> Client:
        client = Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=httpx.MockTransport(api.handle),
        )
        now = [0.0]
        client._clock = lambda: now[0]

        def sleep(s: float) -> None:
            now[0] += s
            api.pods["dev"]["reason"] = "no node has 1 free H100"

        client._sleep = sleep
        return client

    app = build_app(CliDeps(client_factory=factory, home=home))
    env = {"CORRAL_TOKEN": "tok", "CORRAL_WORKSPACE": "team", "NO_COLOR": "1", "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["pod", "create", "dev", "--timeout", "5"], env=env)
    assert result.exit_code == 1
    assert "pod dev is still pending after 5 s: no node has 1 free H100" in result.output
    polls = [s for s in api.sent if s[0] == "GET" and s[1] == f"{WS}/pods/dev"]
    assert len(polls) == 5


def test_create_no_wait_returns_at_once(api: FakeApi, home: Path) -> None:
    api.state_after_create = "pending"
    result = run(api, home, "pod", "create", "dev", "--no-wait")
    assert result.exit_code == 0, result.output
    assert [s[:2] for s in api.sent] == [("POST", f"{WS}/pods")]


# -- pod ls / get ----------------------------------------------------------------------------


def test_ls_renders_each_pod(api: FakeApi, home: Path) -> None:
    api.pod("dev", {"name": "dev", "resources": {"gpus": "H100:1"}})
    api.pod("idle", {"name": "idle", "idle_stop": None}, state="stopped", node=None, sessions=0)
    result = run(api, home, "pod", "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "NODE", "GPUS", "SESSIONS", "IDLE-STOP-AT", "AGE"]
    dev = next(line for line in lines if line.startswith("dev")).split()
    assert dev[:5] == ["dev", "running", "gpu-1", "H100:1", "1"]
    assert dev[5:7] == ["in", "1h59m"] or dev[5:7] == ["in", "2h00m"]
    idle = next(line for line in lines if line.startswith("idle")).split()
    assert idle[:6] == ["idle", "stopped", "-", "-", "0", "never"]


def test_ls_of_no_pods_says_how_to_make_one(api: FakeApi, home: Path) -> None:
    result = run(api, home, "pod", "ls")
    assert result.exit_code == 0, result.output
    assert "no pods in workspace" in result.output
    assert "corral pod create" in result.output


def test_ls_json_is_the_api_document(api: FakeApi, home: Path) -> None:
    api.pod("dev", {"name": "dev"})
    result = run(api, home, "pod", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert [p["name"] for p in json.loads(result.output)["pods"]] == ["dev"]


def test_get_shows_reasons_and_session_events(api: FakeApi, home: Path) -> None:
    api.pod(
        "dev",
        {"name": "dev"},
        state="stopped",
        stop_reason="idle for 2h with GPUs under 10%",
        events=[
            {
                "at": time.time() - 600,
                "kind": "session",
                "text": "ssh session",
                "who": "ann@team",
                "origin": "203.0.113.7",
                "duration_s": 125,
            }
        ],
    )
    result = run(api, home, "pod", "get", "dev")
    assert result.exit_code == 0, result.output
    assert "pod dev in workspace team: stopped" in result.output
    assert "stop reason: idle for 2h with GPUs under 10%" in result.output
    event = next(line for line in result.output.splitlines() if "ann@team" in line)
    assert "203.0.113.7" in event and "2m05s" in event and "session" in event


def test_get_missing_pod_is_one_line(api: FakeApi, home: Path) -> None:
    result = run(api, home, "pod", "get", "nope")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: no pod nope in workspace team"]


# -- ssh-key add -------------------------------------------------------------------------------


def test_ssh_key_add_refuses_a_private_key(api: FakeApi, home: Path, tmp_path: Path) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.export_private_key("openssh"))
    (tmp_path / "id_ed25519.pub").write_bytes(key.export_public_key("openssh"))
    result = run(api, home, "ssh-key", "add", str(private))
    assert result.exit_code == 2
    assert f"error: {private} is a PRIVATE key" in result.output
    assert f"corral ssh-key add {private}.pub" in result.output
    assert api.sent == []  # nothing left the machine

    result = run(api, home, "ssh-key", "add", str(private) + ".pub", "--name", "laptop")
    assert result.exit_code == 0, result.output
    assert api.keys[0]["name"] == "laptop"
    assert api.keys[0]["public_key"] == key.export_public_key("openssh").decode().strip()


def test_ssh_key_add_refuses_what_is_not_a_key(api: FakeApi, home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "notes.pub"
    junk.write_text("ssh-ed25519 not-base64!\n")
    result = run(api, home, "ssh-key", "add", str(junk))
    assert result.exit_code == 2
    assert "not an OpenSSH public key" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_volume_delete_in_use_is_one_line(api: FakeApi, home: Path) -> None:
    assert run(api, home, "volume", "create", "data").exit_code == 0
    assert api.volumes[0]["name"] == "data"
    result = run(api, home, "volume", "delete", "data")
    assert result.exit_code == 1
    assert "error: volume data is mounted by pod dev" in result.output
