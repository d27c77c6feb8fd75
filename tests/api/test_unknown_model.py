"""A GPU model no node of the fleet has ever had (`--gpus banana`, issue 10 item 9): the
submission is accepted, and its answer (and the CLI, on stderr) warns at once, naming the
models the fleet has; a model some node has had, lost or not, gets no warning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, Settings
from corral.core.scheduler.gpu_models import never_had
from corral.server.services import nodes
from corral.server.store.tables import Node
from corral.wire import agent as wire
from support.app import AppTransport, in_process
from support.store import register_node

JOBS = "/v1/workspaces/default/jobs"
ADMIN = {"Authorization": "Bearer crl_admin"}
BANANA = "no node of this fleet has ever had banana GPUs; models: H100"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def _submit(api: TestClient, gpus: str) -> list[str]:
    r = api.post(JOBS, json={"command": "true", "resources": {"gpus": gpus}}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "pending"  # accepted all the same: such a node may join
    warnings: list[str] = r.json()["warnings"]
    return warnings


def _join(api: TestClient, name: str, model: str) -> None:
    inventory = wire.Inventory(
        hostname=name,
        cpus=4,
        memory_mb=16000,
        disk_mb=100000,
        gpu_backend="fake",
        labels={},
        gpus=[wire.Gpu(index=0, uuid=f"{name}-0", model=model, memory_mb=40960)],
    )
    with api.app.state.cp.store.transaction() as session:  # type: ignore[attr-defined]
        nodes.register_node(
            session,
            wire.RegisterRequest(join_token="crj_join", name=name, inventory=inventory),
            1.0,
        )


def test_a_model_no_node_ever_had_is_accepted_with_a_warning(api: TestClient) -> None:
    register_node(api.app.state.cp.store, "n1", gpus=2)  # type: ignore[attr-defined]
    assert _submit(api, "banana:1") == [BANANA]
    for known in ("H100:1", "h100", "2"):
        assert _submit(api, known) == []
    listed = api.get(f"{JOBS}", headers=ADMIN).json()["jobs"]
    assert all(j["warnings"] == [] for j in listed)  # said once, in the submission's answer


def test_a_lost_node_still_counts_and_a_model_that_joins_is_known_at_once(
    api: TestClient,
) -> None:
    store = api.app.state.cp.store  # type: ignore[attr-defined]
    register_node(store, "n1", gpus=2)
    assert _submit(api, "H100") == []  # seen once: kept
    with store.transaction() as session:
        session.scalars(select(Node)).one().condition = "lost"
    assert _submit(api, "H100") == []
    assert _submit(api, "A100") == ["no node of this fleet has ever had A100 GPUs; models: H100"]
    _join(api, "n2", "NVIDIA A100-SXM4-40GB")
    assert _submit(api, "a100:1") == []
    assert _submit(api, "banana") == [
        "no node of this fleet has ever had banana GPUs; models: H100, NVIDIA A100-SXM4-40GB"
    ]


def test_a_fleet_with_no_gpu_yet_says_so(api: TestClient) -> None:
    assert _submit(api, "H100:1") == [
        "no node of this fleet has ever had H100 GPUs; models: none yet"
    ]


def test_never_had_is_the_schedulers_matching_rule() -> None:
    assert never_had(None, []) is None
    assert never_had("h100", ["NVIDIA H100 80GB HBM3"]) is None
    assert never_had("H200", ["NVIDIA H100 80GB HBM3", "A100", "A100"]) == (
        "no node of this fleet has ever had H200 GPUs; models: A100, NVIDIA H100 80GB HBM3"
    )


def test_corral_job_run_prints_the_warning_on_stderr(tmp_path: Path) -> None:
    with in_process(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "server") as server:
        register_node(server.app.state.cp.store, "n1", gpus=1)  # type: ignore[attr-defined]

        def client(settings: Settings) -> Client:
            return Client(
                "http://testserver",
                settings.token,
                settings.workspace,
                transport=AppTransport(server),
            )

        app = build_app(CliDeps(client_factory=client, home=tmp_path / "home"))
        env: dict[str, Any] = {"CORRAL_TOKEN": "crl_admin", "CORRAL_SERVER": None}
        runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
        result = runner.invoke(app, ["job", "run", "-d", "--gpus", "banana", "--", "true"], env=env)
        assert result.exit_code == 0, result.output
        assert result.stderr.strip() == f"warning: {BANANA}"
        assert "submitted job" in result.stdout
        quiet = runner.invoke(app, ["job", "run", "-d", "--gpus", "H100", "--", "true"], env=env)
        assert quiet.exit_code == 0 and quiet.stderr == ""


def test_a_pending_job_says_no_node_ever_had_its_model(api: TestClient) -> None:
    """The pending reason, not only the submission's warning: a typo is not a wait for
    capacity. A model only a lost node had is a wait (that node may come back)."""
    from corral.server.controllers.scheduler import schedule_once

    cp = api.app.state.cp  # type: ignore[attr-defined]
    register_node(cp.store, "n1", gpus=2)
    _join(api, "old", "A100")
    with cp.store.transaction() as session:
        session.scalars(select(Node).where(Node.name == "old")).one().condition = "lost"
    _submit(api, "banana:1")
    r = api.post(
        JOBS, json={"name": "a100", "command": "true", "resources": {"gpus": "A100"}}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    schedule_once(cp)
    jobs = {j["name"]: j for j in api.get(JOBS, headers=ADMIN).json()["jobs"]}
    banana = next(j for j in jobs.values() if j["spec"]["resources"]["gpus"]["type"] == "banana")
    assert banana["reason"] == "no node of this fleet has ever had banana GPUs; models: A100, H100"
    assert "ever had" not in jobs["a100"]["reason"] and "A100" in jobs["a100"]["reason"]


def test_an_endpoint_asking_for_a_model_no_node_ever_had_is_warned(api: TestClient) -> None:
    register_node(api.app.state.cp.store, "n1", gpus=2)  # type: ignore[attr-defined]
    eps = "/v1/workspaces/default/endpoints"
    spec: dict[str, Any] = {"name": "chat", "command": "serve", "resources": {"gpus": "banana"}}
    r = api.post(eps, json=spec, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == [BANANA]
    fixed = api.put(f"{eps}/chat", json={**spec, "resources": {"gpus": "H100"}}, headers=ADMIN)
    assert fixed.status_code == 200 and fixed.json()["warnings"] == []
    assert api.get(f"{eps}/chat", headers=ADMIN).json()["warnings"] == []
