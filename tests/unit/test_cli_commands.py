"""The CLI's commands against an in-memory API behind httpx.MockTransport.

The seam is `build_app(CliDeps(client_factory=...))`: each command builds its client through
the factory, so no global is patched.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, Settings
from corral.spec import JobSpec

NOW = 1_700_000_000.0


class FakeApi:
    """Just enough of the REST API to drive the CLI, recording what it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.posted: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.outcome: dict[str, tuple[str, int | None, str]] = {}  # name -> state, exit, log
        self.token = "crl_good"
        self.nodes: list[dict[str, Any]] = []

    def client(self, settings: Settings) -> Client:
        return Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=httpx.MockTransport(self.handle),
        )

    def add_job(self, name: str, state: str = "running", **over: Any) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": name,
            "workspace": "default",
            "state": state,
            "spec": {
                "name": name,
                "command": "python train.py",
                "replicas": 2,
                "resources": {"gpus": {"count": 8, "type": "H100"}, "memory": "64Gi"},
            },
            "attempt": 1,
            "restarts": 0,
            "submitted_at": NOW - 300,
            "started_at": NOW - 240,
            "replicas": [
                {
                    "id": f"{name}-0",
                    "rank": 0,
                    "attempt": 1,
                    "node": "gpu-a",
                    "gpus": [0, 1],
                    "state": "running",
                    "pid": 41,
                },
                {
                    "id": f"{name}-1",
                    "rank": 1,
                    "attempt": 1,
                    "node": "gpu-b",
                    "gpus": [0, 1],
                    "state": "running",
                    "pid": 42,
                },
            ],
        }
        job.update(over)
        self.jobs[name] = job
        return job

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "invalid token")
        path, method = request.url.path, request.method
        if path == "/v1/nodes":
            return httpx.Response(200, json={"nodes": self.nodes})
        m = re.fullmatch(
            r"/v1/workspaces/([^/]+)/jobs(?:/([^/]+))?(/logs/all|/logs|/cancel)?", path
        )
        if m is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        ws, name, tail = m.groups()
        if name is None and method == "POST":
            body = json.loads(request.content)
            self.posted.append(body)
            name = body.get("name") or "job-brisk-otter-1a2b"
            if name in self.jobs:
                return _error(409, "conflict", f"job '{name}' already exists in workspace '{ws}'")
            job = self.add_job(
                name,
                state="pending",
                spec={**body, "name": name},
                attempt=0,
                replicas=[],
                started_at=None,
            )
            return httpx.Response(201, json=job)
        if name is None:
            return httpx.Response(200, json={"jobs": list(self.jobs.values())})
        if name not in self.jobs:
            return _error(404, "not_found", f"job '{name}' not found")
        job = self.jobs[name]
        if tail == "/logs":
            state, code, log = self.outcome.get(name, ("succeeded", 0, ""))
            offset = int(request.url.params["offset"])
            # The whole log in one page; the job ends once it has all been read.
            job.update(state=state, exit_code=code, attempt=1, finished_at=NOW)
            return httpx.Response(
                200,
                json={
                    "replica": 0,
                    "attempt": 1,
                    "data": log[offset:],
                    "offset": offset,
                    "next_offset": len(log),
                    "complete": True,
                },
            )
        if tail == "/logs/all":
            state, code, log = self.outcome.get(name, ("succeeded", 0, ""))
            offsets = [int(o) for o in request.url.params.get_list("offset")] or [0]
            # As /logs: one replica, the whole log in one page, then the job has ended.
            job.update(state=state, exit_code=code, attempt=1, finished_at=NOW)
            page = {
                "replica": 0,
                "data": log[offsets[0] :],
                "offset": offsets[0],
                "next_offset": len(log),
                "complete": True,
            }
            body = {"state": state, "job_attempt": 1, "attempt": 1, "replicas": 1}
            return httpx.Response(200, json={**body, "pages": [page]})
        if tail == "/cancel":
            job["state"] = "cancelling"
            return httpx.Response(200, json=job)
        if method == "DELETE":
            if job["state"] not in ("succeeded", "failed", "cancelled"):
                return _error(409, "conflict", f"job '{name}' is {job['state']}, not finished")
            del self.jobs[name]
            return httpx.Response(204)
        return httpx.Response(200, json=job)


def _error(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "fields": fields or []}}
    )


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"server": "http://corral.test:7390", "token": "crl_good", "workspace": "default"}
        )
    )
    return tmp_path


@pytest.fixture
def cli(api: FakeApi, home: Path) -> CliRunner:
    return CliRunner(
        env={
            "CORRAL_SERVER": None,
            "CORRAL_TOKEN": None,
            "CORRAL_WORKSPACE": None,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )


def run(cli: CliRunner, api: FakeApi, home: Path, *args: str) -> Any:
    app = build_app(CliDeps(client_factory=api.client, home=home))
    return cli.invoke(app, list(args))


def test_help_lists_every_noun(cli: CliRunner, api: FakeApi, home: Path) -> None:
    result = run(cli, api, home, "--help")
    assert result.exit_code == 0
    for noun in ("job", "node", "workspace", "token", "up", "down", "server", "agent"):
        assert re.search(rf"^\W*{noun}\b", result.stdout, re.M), noun


def test_inline_argv_after_dashdash_becomes_the_entrypoint(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    result = run(
        cli,
        api,
        home,
        "job",
        "run",
        "-d",
        "--name",
        "t1",
        "--gpus",
        "H100:8",
        "--memory",
        "16Gi",
        "--replicas",
        "2",
        "--env",
        "A=1",
        "--",
        "python",
        "train.py",
        "--lr",
        "3e-4",
    )
    assert result.exit_code == 0, result.output
    body = api.posted[0]
    assert body["entrypoint"] == ["python", "train.py", "--lr", "3e-4"]
    assert "command" not in body
    assert body["replicas"] == 2 and body["env"] == {"A": "1"}
    spec = JobSpec.model_validate(body)
    assert spec.resources.gpus.count == 8 and spec.resources.gpus.type == "H100"
    assert spec.resources.memory == 16 * 1024
    assert "submitted job t1" in result.stdout and "corral job logs -f t1" in result.stdout


def test_one_argument_with_spaces_becomes_a_shell_command(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    result = run(cli, api, home, "job", "run", "-d", "--", "echo hi && echo there")
    assert result.exit_code == 0, result.output
    assert api.posted[0]["command"] == "echo hi && echo there"
    assert "entrypoint" not in api.posted[0]
    assert "name" not in api.posted[0]  # the server names it
    assert "job-brisk-otter-1a2b" in result.stdout


def test_a_command_without_dashdash_is_refused_with_the_fix(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    result = run(cli, api, home, "job", "run", "python", "train.py")
    assert result.exit_code == 2
    assert "corral job run --gpus 1 -- python train.py" in result.stderr
    assert api.requests == []


def test_run_follows_the_log_and_exits_with_the_jobs_exit_code(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    api.outcome["boom"] = ("failed", 3, "step 1\nTraceback: oops\n")
    result = run(cli, api, home, "job", "run", "--name", "boom", "--", "python", "x.py")
    assert result.exit_code == 3
    assert result.stdout == "step 1\nTraceback: oops\n"  # only the job's own output
    assert "failed" in result.stderr and "exit code 3" in result.stderr

    api.outcome["fine"] = ("succeeded", 0, "ok\n")
    result = run(cli, api, home, "job", "run", "--name", "fine", "--", "true")
    assert result.exit_code == 0 and result.stdout == "ok\n"
    assert "succeeded" in result.stderr


def test_a_bad_yaml_file_lists_every_bad_field_and_exits_2(
    cli: CliRunner, api: FakeApi, home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("command: python train.py\nreplicsa: 2\nresources:\n  gpus: H100:-1\n")
    result = run(cli, api, home, "job", "run", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert all(line.startswith(f"error: {spec}: ") for line in lines)
    assert any("replicsa: unknown field" in line for line in lines)
    assert any("resources.gpus" in line for line in lines)
    assert "Traceback" not in result.output
    assert api.requests == []


def test_a_file_with_flags_overrides_its_fields_and_keeps_its_sizes(
    cli: CliRunner, api: FakeApi, home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "train.yaml"
    spec.write_text(
        "name: base\ncommand: python train.py\nenv: {A: '1'}\n"
        "resources: {memory: 512Mi, gpus: 'H100:8'}\n"
    )
    result = run(
        cli,
        api,
        home,
        "job",
        "run",
        "-d",
        str(spec),
        "--name",
        "over",
        "--gpus",
        "A100:2",
        "--env",
        "B=2",
    )
    assert result.exit_code == 0, result.output
    sent = JobSpec.model_validate(api.posted[0])
    assert sent.name == "over" and sent.command == "python train.py"
    assert sent.env == {"A": "1", "B": "2"}
    assert (sent.resources.gpus.type, sent.resources.gpus.count) == ("A100", 2)
    assert sent.resources.memory == 512


def test_a_bad_flag_is_named_as_the_flag(cli: CliRunner, api: FakeApi, home: Path) -> None:
    result = run(cli, api, home, "job", "run", "--gpus", "H100:-1", "--", "true")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --gpus: ")
    assert api.requests == []


def test_job_ls_json_is_one_json_document_of_the_api_view(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    api.add_job("train")
    result = run(cli, api, home, "job", "ls", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [j["name"] for j in data["jobs"]] == ["train"]
    # The document is the API view: its spec reads back as the same spec.
    assert JobSpec.model_validate(data["jobs"][0]["spec"]).resources.memory == 65536


def test_job_ls_table(cli: CliRunner, api: FakeApi, home: Path) -> None:
    api.add_job("train", reason=None)
    api.add_job("wait", state="pending", reason="needs 2×H100:8; no node has them", replicas=[])
    result = run(cli, api, home, "job", "ls")
    assert result.exit_code == 0
    train = next(line for line in result.stdout.splitlines() if line.startswith("train"))
    assert "running" in train and "2/2" in train and "H100:8" in train
    assert "needs 2×H100:8" in result.stdout


def test_job_get_shows_replicas_and_the_log_tail_of_a_failure(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    api.add_job(
        "boom",
        state="failed",
        exit_code=1,
        reason="replica 0 exited with code 1",
        restarts=1,
        attempt=2,
        finished_at=NOW - 10,
        log_tail=["Traceback (most recent call last):", "ValueError: [bad] lr"],
    )
    result = run(cli, api, home, "job", "get", "boom")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "failed (exit code 1)" in out
    assert "replica 0 exited with code 1" in out
    assert "gpu-a" in out and "gpu-b" in out
    assert "ValueError: [bad] lr" in out  # printed as text: brackets are not markup
    assert "2 replicas × H100:8" in out and "64Gi memory" in out


def test_unknown_job_is_one_line_and_exit_1(cli: CliRunner, api: FakeApi, home: Path) -> None:
    result = run(cli, api, home, "job", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: job 'nope' not found\n"


def test_a_rejected_token_says_what_to_do(cli: CliRunner, api: FakeApi, home: Path) -> None:
    api.token = "crl_other"
    result = run(cli, api, home, "job", "ls")
    assert result.exit_code == 1
    # Which server, and where the token came from: an empty CORRAL_HOME once meant another
    # corral on the default port, and the error did not say so.
    assert "the corral server at http://" in result.stderr
    assert "rejected the token" in result.stderr and "CORRAL_TOKEN" in result.stderr


def test_delete_of_a_running_job_hints_at_cancel(cli: CliRunner, api: FakeApi, home: Path) -> None:
    api.add_job("train")
    result = run(cli, api, home, "job", "delete", "train")
    assert result.exit_code == 1
    assert "corral job cancel train" in result.stderr
    assert run(cli, api, home, "job", "cancel", "train").exit_code == 0
    api.jobs["train"]["state"] = "cancelled"
    assert run(cli, api, home, "job", "delete", "train").exit_code == 0
    assert "train" not in api.jobs


def test_job_logs_prints_the_log(cli: CliRunner, api: FakeApi, home: Path) -> None:
    api.add_job("train")
    api.outcome["train"] = ("succeeded", 0, "line 1\nline 2\n")
    result = run(cli, api, home, "job", "logs", "train")
    assert result.exit_code == 0
    assert result.stdout == "line 1\nline 2\n"
    logs = [r for r in api.requests if r.url.path.endswith("/logs")]
    assert logs[0].url.params["replica"] == "0"


def test_workspace_flag_selects_the_path(cli: CliRunner, api: FakeApi, home: Path) -> None:
    run(cli, api, home, "job", "ls", "-w", "research")
    run(cli, api, home, "--workspace", "vision", "job", "ls")
    paths = [r.url.path for r in api.requests]
    assert paths == ["/v1/workspaces/research/jobs", "/v1/workspaces/vision/jobs"]


def test_node_ls_renders_gpus_allocation_and_heartbeat(
    cli: CliRunner, api: FakeApi, home: Path
) -> None:
    gpus = [
        {
            "index": i,
            "model": "H100",
            "memory_mb": 81559,
            "uuid": f"GPU-{i}",
            "healthy": True,
            "allocated": i < 3,
        }
        for i in range(8)
    ]
    api.nodes = [
        {
            "id": "n1",
            "name": "gpu-a",
            "address": "10.0.0.1",
            "condition": "ready",
            "gpu_backend": "fake",
            "gpus": gpus,
            "cpus": 64,
            "memory_mb": 512 * 1024,
            "disk_mb": 0,
            "labels": {},
            "agent_version": "0.1.0",
            "connected": True,
            "last_heartbeat_at": NOW,
            "heartbeat_age_s": 1.2,
            "registered_at": NOW - 100,
        }
    ]
    result = run(cli, api, home, "node", "ls")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("gpu-a"))
    for needle in ("ready", "8×H100 (fake)", "3/8", "64", "512Gi", "1s ago"):
        assert needle in row, (needle, row)
    data = json.loads(run(cli, api, home, "node", "ls", "--json").stdout)
    assert data["nodes"][0]["name"] == "gpu-a"


def test_an_unreachable_server_is_exit_1_with_how_to_start_one(cli: CliRunner, home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(CliDeps(home=home))  # the real client and transport
    result = cli.invoke(app, ["--server", f"http://127.0.0.1:{port}", "job", "ls"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: cannot reach the corral server at http://127.0.0.1:{port}"
    )
    assert "corral up" in result.stderr
    assert "Traceback" not in result.output


def test_usage_mistakes_are_one_line_with_a_help_hint() -> None:
    import subprocess
    import sys

    for argv, needle in (
        (["job", "run", "--preemptibl", "--", "true"], "No such option: --preemptibl"),
        (["nope"], "No such command 'nope'"),
        (["up", "--port", "0"], "--port"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and needle in lines[0], result.stderr
        assert lines[1].startswith("hint: see `corral") and len(lines) == 2


def test_inline_scheduling_flags_shape_the_spec_and_bad_ones_name_the_flag() -> None:
    import pytest

    from corral.cli.jobspec import RunFlags, build_job_spec
    from corral.cli.output import CliError
    from corral.spec.errors import SpecError

    flags = RunFlags(
        priority="train",
        preemptible=True,
        topology="rack",
        max_runtime="2h",
        selector=["rack=r1", "pool=a"],
    )
    spec = build_job_spec([], ["python", "train.py"], flags)
    assert (spec.priority, spec.preemptible, spec.topology, spec.max_runtime) == (
        100,
        True,
        "rack",
        7200.0,
    )
    assert spec.node_selector == {"rack": "r1", "pool": "a"}
    with pytest.raises(SpecError) as bad:
        build_job_spec([], ["true"], RunFlags(priority="urgent", topology="planet"))
    assert {str(e).split(":")[0] for e in bad.value.errors} == {"--priority", "--topology"}
    with pytest.raises(CliError, match="--selector 'rack'"):
        build_job_spec([], ["true"], RunFlags(selector=["rack"]))
