"""The CLI's commands against the real control plane in-process (tests/support/cli.py).

The seam is `build_app(CliDeps(client_factory=...))`: each command builds its SDK client
through the factory, and that client's requests go to the app through its TestClient; what
a command sent is read back from the server, and what it prints is the server's answer.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import NotFound
from corral.spec import JobSpec
from support.cli import Cli, finish_job, scheduled_reason, submit_job
from support.store import register_node

GANG = {"replicas": 2, "resources": {"gpus": "H100:8", "memory": "64Gi"}}


def job_names(cli: Cli, workspace: str = "default") -> list[str]:
    return [j.name for j in cli.sdk(workspace).list_jobs()]


def test_help_lists_every_noun(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for noun in ("job", "node", "workspace", "token", "up", "down", "server", "agent"):
        assert re.search(rf"^\W*{noun}\b", result.stdout, re.M), noun


def test_inline_argv_after_dashdash_becomes_the_entrypoint(cli: Cli) -> None:
    result = cli(
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
    spec = cli.sdk().get_job("t1").spec
    assert spec.entrypoint == ["python", "train.py", "--lr", "3e-4"]
    assert spec.command is None
    assert spec.replicas == 2 and spec.env == {"A": "1"}
    assert spec.resources.gpus.count == 8 and spec.resources.gpus.type == "H100"
    assert spec.resources.memory == 16 * 1024
    assert "submitted job t1" in result.stdout and "corral job logs -f t1" in result.stdout


def test_one_argument_with_spaces_becomes_a_shell_command(cli: Cli) -> None:
    result = cli("job", "run", "-d", "--", "echo hi && echo there")
    assert result.exit_code == 0, result.output
    [job] = cli.sdk().list_jobs()  # the server named it
    assert job.spec.command == "echo hi && echo there" and job.spec.entrypoint is None
    assert f"submitted job {job.name} " in result.stdout


def test_a_command_without_dashdash_is_refused_with_the_fix(cli: Cli) -> None:
    result = cli("job", "run", "python", "train.py")
    assert result.exit_code == 2
    assert "corral job run --gpus 1 -- python train.py" in result.stderr
    assert job_names(cli) == []


def test_run_follows_the_log_and_exits_with_the_jobs_exit_code(
    cli: Cli, server: TestClient
) -> None:
    """The job ends (as its agent would report) while `job run` follows it."""
    cli.virtual_time = True
    outcome: dict[str, tuple[str, int, list[str]]] = {
        "boom": ("failed", 3, ["step 1\n", "Traceback: oops\n"]),
        "fine": ("succeeded", 0, ["ok\n"]),
    }

    def finish_what_was_submitted() -> None:
        for job in cli.sdk().list_jobs(states=["pending"]):
            state, code, log = outcome[job.name]
            finish_job(server, job.name, {0: log}, state=state, exit_code=code)

    cli.on_sleep = finish_what_was_submitted
    result = cli("job", "run", "--name", "boom", "--", "python", "x.py")
    assert result.exit_code == 3, result.output
    assert result.stdout == "step 1\nTraceback: oops\n"  # only the job's own output
    assert "failed" in result.stderr and "exit code 3" in result.stderr

    result = cli("job", "run", "--name", "fine", "--", "true")
    assert result.exit_code == 0 and result.stdout == "ok\n"
    assert "succeeded" in result.stderr


def test_a_bad_yaml_file_lists_every_bad_field_and_exits_2(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("command: python train.py\nreplicsa: 2\nresources:\n  gpus: H100:-1\n")
    result = cli("job", "run", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert all(line.startswith(f"error: {spec}: ") for line in lines)
    assert any("replicsa: unknown field" in line for line in lines)
    assert any("resources.gpus" in line for line in lines)
    assert "Traceback" not in result.output
    assert job_names(cli) == []


def test_a_file_with_flags_overrides_its_fields_and_keeps_its_sizes(
    cli: Cli, tmp_path: Path
) -> None:
    spec = tmp_path / "train.yaml"
    spec.write_text(
        "name: base\ncommand: python train.py\nenv: {A: '1'}\n"
        "resources: {memory: 512Mi, gpus: 'H100:8'}\n"
    )
    result = cli(
        "job", "run", "-d", str(spec), "--name", "over", "--gpus", "A100:2", "--env", "B=2"
    )
    assert result.exit_code == 0, result.output
    assert job_names(cli) == ["over"]
    sent = cli.sdk().get_job("over").spec
    assert sent.name == "over" and sent.command == "python train.py"
    assert sent.env == {"A": "1", "B": "2"}
    assert (sent.resources.gpus.type, sent.resources.gpus.count) == ("A100", 2)
    assert sent.resources.memory == 512


def test_a_bad_flag_is_named_as_the_flag(cli: Cli) -> None:
    result = cli("job", "run", "--gpus", "H100:-1", "--", "true")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --gpus: ")
    assert job_names(cli) == []


def test_job_ls_json_is_one_json_document_of_the_api_view(cli: Cli, server: TestClient) -> None:
    submit_job(server, "train", **GANG)
    result = cli("job", "ls", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [j["name"] for j in data["jobs"]] == ["train"]
    # The document is the API view: its spec reads back as the same spec.
    assert JobSpec.model_validate(data["jobs"][0]["spec"]).resources.memory == 65536


def test_job_ls_table(cli: Cli, server: TestClient) -> None:
    submit_job(server, "train", **GANG)
    finish_job(server, "train", {0: [], 1: []}, nodes=["gpu-a", "gpu-b"])
    submit_job(server, "wait", **GANG)
    why = scheduled_reason(cli, "wait")  # the scheduler's words: no node has room
    result = cli("job", "ls")
    assert result.exit_code == 0
    train = next(line for line in result.stdout.splitlines() if line.startswith("train"))
    assert "succeeded" in train and "H100:8" in train
    wait = next(line for line in result.stdout.splitlines() if line.startswith("wait"))
    assert "pending" in wait and "0/2" in wait and why in wait


def test_job_get_shows_replicas_and_the_log_tail_of_a_failure(cli: Cli, server: TestClient) -> None:
    submit_job(server, "boom", **GANG)
    finish_job(
        server,
        "boom",
        {0: ["Traceback (most recent call last):\n", "ValueError: [bad] lr\n"], 1: []},
        state="failed",
        exit_code=1,
        reason="replica 0 exited with code 1",
        nodes=["gpu-a", "gpu-b"],
    )
    result = cli("job", "get", "boom")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "failed (exit code 1)" in out
    assert "replica 0 exited with code 1" in out
    assert "gpu-a" in out and "gpu-b" in out
    assert "ValueError: [bad] lr" in out  # printed as text: brackets are not markup
    assert "2 replicas × H100:8" in out and "64Gi memory" in out


def test_unknown_job_is_one_line_and_exit_1(cli: Cli) -> None:
    result = cli("job", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: job 'nope' in workspace 'default' not found\n"


def test_a_rejected_token_says_what_to_do(cli: Cli) -> None:
    result = cli("job", "ls", token="crl_other")
    assert result.exit_code == 1
    # Which server, and where the token came from: an empty CORRAL_HOME once meant another
    # corral on the default port, and the error did not say so.
    assert "the corral server at http://" in result.stderr
    assert "rejected the token" in result.stderr and "CORRAL_TOKEN" in result.stderr


def test_delete_of_an_unfinished_job_hints_at_cancel(cli: Cli, server: TestClient) -> None:
    submit_job(server, "train", **GANG)
    result = cli("job", "delete", "train")
    assert result.exit_code == 1
    assert "corral job cancel train" in result.stderr
    cancelled = cli("job", "cancel", "train")
    assert cancelled.exit_code == 0 and "job train: cancelled" in cancelled.stdout
    assert cli("job", "delete", "train").exit_code == 0
    with pytest.raises(NotFound):
        cli.sdk().get_job("train")


def test_job_logs_prints_the_log(cli: Cli, server: TestClient) -> None:
    submit_job(server, "train", **GANG)
    finish_job(server, "train", {0: ["line 1\n", "line 2\n"], 1: ["other\n"]})
    result = cli("job", "logs", "train")
    assert result.exit_code == 0
    assert result.stdout == "line 1\nline 2\n"  # replica 0's, by default


def test_workspace_flag_selects_the_workspace(cli: Cli, server: TestClient) -> None:
    for ws in ("research", "vision"):
        assert cli("workspace", "create", ws).exit_code == 0
        submit_job(server, f"in-{ws}", workspace=ws)
    research = cli("job", "ls", "-w", "research")
    vision = cli("--workspace", "vision", "job", "ls")
    assert "in-research" in research.stdout and "in-vision" not in research.stdout
    assert "in-vision" in vision.stdout and "in-research" not in vision.stdout


def test_node_ls_renders_gpus_allocation_and_heartbeat(cli: Cli, server: TestClient) -> None:
    register_node(server.app.state.cp.store, "gpu-a", gpus=8, cpus=64, memory_mb=512 * 1024)  # type: ignore[attr-defined]
    [node] = cli.sdk().list_nodes()
    result = cli("node", "ls")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("gpu-a"))
    for needle in (node.condition, "8×H100 (fake)", "0/8", "64", "512Gi", " ago"):
        assert needle in row, (needle, row)
    data = json.loads(cli("node", "ls", "--json").stdout)
    assert data["nodes"][0]["name"] == "gpu-a"


def test_an_unreachable_server_is_exit_1_with_how_to_start_one(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(CliDeps(home=tmp_path))  # the real client and transport
    runner = CliRunner(env={"CORRAL_TOKEN": "crl_any", "CORRAL_SERVER": None, "NO_COLOR": "1"})
    result = runner.invoke(app, ["--server", f"http://127.0.0.1:{port}", "job", "ls"])
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
