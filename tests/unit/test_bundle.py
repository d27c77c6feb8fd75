"""The agent bundle: what it holds, that it is built once, and who may download it."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.providers import bundle
from corral.providers.bundle import BundleInfo, bundle_info, closure, interpreter
from support.app import ADMIN_TOKEN, JOIN_TOKEN, in_process


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    return bundle_info(tmp_path_factory.mktemp("home"))


def test_closure_is_corral_and_its_runtime_requirements_without_extras() -> None:
    names = {d.metadata["Name"].lower() for d in closure()}
    assert {"corral", "pydantic", "pydantic_core", "httpx", "typer", "uv"} <= names
    # corral's own extras (dev, train, sim) are not followed.
    assert not names & {"pytest", "torch", "mypy", "moto", "matplotlib"}


def test_bundle_holds_the_interpreter_tag_corral_and_executables(built: BundleInfo) -> None:
    assert built.path.is_file() and built.bytes == built.path.stat().st_size
    with tarfile.open(built.path) as tar:
        names = set(tar.getnames())
        extracted = tar.extractfile("bundle.json")
        assert extracted is not None
        meta = json.loads(extracted.read())
    for key, value in interpreter().items():
        assert meta[key] == value
    assert meta["dists"]["corral"]
    assert "site-packages/corral/cli/main.py" in names
    assert "site-packages/corral/agent/main.py" in names
    assert any(n.startswith("site-packages/pydantic_core/") and n.endswith(".so") for n in names)
    assert "bin/uv" in names
    # Text scripts name this server's interpreter: useless on a host, left out.
    assert "bin/typer" not in names and "bin/corral" not in names
    # An editable install's hook (a .pth naming this checkout) is not shipped.
    assert not any(n.endswith(".pth") and "corral" in n for n in names)


def test_bundle_is_built_once_even_when_asked_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: BundleInfo
) -> None:
    calls: list[Path] = []
    real = bundle._build

    def counting(dists: list, dest: Path) -> None:  # type: ignore[type-arg]
        calls.append(dest)
        real(dists, dest)

    monkeypatch.setattr(bundle, "_build", counting)
    results: list[BundleInfo] = []
    threads = [
        threading.Thread(target=lambda: results.append(bundle_info(tmp_path))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert {r.sha256 for r in results} == {results[0].sha256}
    assert results[0].key == built.key  # same environment, same key
    bundle_info(tmp_path)
    assert len(calls) == 1


@pytest.fixture
def server(tmp_path: Path, built: BundleInfo) -> Iterator[TestClient]:
    from corral.server.api.agent_bundle import router

    client = in_process(f"sqlite:///{tmp_path / 'db.sqlite'}", built.path.parent.parent)
    app = client.app
    if not any(getattr(r, "path", "").startswith("/v1/agent/bundle") for r in app.routes):
        app.include_router(router)
    with client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_info_and_download_with_an_admin_token(server: TestClient, built: BundleInfo) -> None:
    info = server.get("/v1/agent/bundle/info", headers=_auth(ADMIN_TOKEN))
    assert info.status_code == 200, info.text
    assert info.json()["sha256"] == built.sha256
    assert info.json()["python"] == interpreter()["python"]
    body = server.get("/v1/agent/bundle", headers=_auth(ADMIN_TOKEN))
    assert body.status_code == 200
    assert len(body.content) == built.bytes


def test_a_join_token_reads_the_bundle_without_being_consumed(server: TestClient) -> None:
    made = server.post(
        "/v1/join-tokens", json={"max_uses": 1, "ttl_s": 600}, headers=_auth(ADMIN_TOKEN)
    )
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    for _ in range(2):
        got = server.get("/v1/agent/bundle/info", headers=_auth(secret))
        assert got.status_code == 200, got.text
    listed = server.get("/v1/join-tokens", headers=_auth(ADMIN_TOKEN)).json()
    rows = listed["join_tokens"]
    assert [r["uses"] for r in rows if r["name"] == made.json()["name"]] == [0]
    # Revoked: refused.
    server.delete(f"/v1/join-tokens/{made.json()['name']}", headers=_auth(ADMIN_TOKEN))
    assert server.get("/v1/agent/bundle/info", headers=_auth(secret)).status_code == 403


def test_refused_without_a_token_or_with_a_workspace_token(server: TestClient) -> None:
    assert server.get("/v1/agent/bundle/info").status_code == 401
    assert server.get("/v1/agent/bundle", headers=_auth("crl_nobody")).status_code == 403


def test_the_bootstrap_join_token_is_accepted(server: TestClient) -> None:
    assert server.get("/v1/agent/bundle/info", headers=_auth(JOIN_TOKEN)).status_code == 200


def test_the_agent_runs_without_what_the_bundle_leaves_out() -> None:
    # Every distribution the bundle drops, made unimportable: the agent's command and its
    # daemon still import (their --help runs through the CLI as a host runs it).
    dropped = {d.metadata["Name"] for d in closure(leave_out=frozenset())} - {
        d.metadata["Name"] for d in closure()
    }
    assert {"boto3", "botocore", "SQLAlchemy", "fastapi"} <= dropped
    modules = sorted(
        {
            str(f).split("/")[0].removesuffix(".py")
            for d in closure(leave_out=frozenset())
            if d.metadata["Name"] in dropped
            for f in d.files or []
            if not str(f).startswith("..") and ".dist-info" not in str(f)
        }
    )
    code = (
        "import sys\n"
        f"for m in {modules!r}:\n"
        "    sys.modules[m] = None\n"
        "import corral.agent.main, corral.agent.daemon\n"
        "from corral.cli.main import main\n"
        "sys.argv = ['corral', 'agent', '--help']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Run the node agent" in done.stdout
