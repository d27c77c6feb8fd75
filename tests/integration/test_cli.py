"""The CLI as a user runs it, against a real control plane and agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.cluster import Cluster, free_port, wait_for


def corral(
    cluster: Cluster | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = dict(cluster.env) if cluster else dict(os.environ)
    base.update(env or {})
    base["NO_COLOR"] = "1"
    base["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_job_run_inline_streams_the_log_and_exits_with_the_jobs_code(one_node: Cluster) -> None:
    ok = corral(
        one_node,
        "job",
        "run",
        "--name",
        "inline",
        "--cpus",
        "0.1",
        "--",
        "sh",
        "-c",
        "echo from-the-job",
    )
    assert ok.returncode == 0, ok.stderr
    assert "from-the-job" in ok.stdout
    bad = corral(one_node, "job", "run", "--cpus", "0.1", "--", "sh", "-c", "exit 4")
    assert bad.returncode == 4, bad.stderr


def test_listings_are_tables_or_json(one_node: Cluster) -> None:
    assert (
        corral(
            one_node, "job", "run", "-d", "--name", "listed", "--cpus", "0.1", "--", "true"
        ).returncode
        == 0
    )
    table = corral(one_node, "job", "ls")
    assert "listed" in table.stdout
    jobs = json.loads(corral(one_node, "job", "ls", "--json").stdout)
    names = [j["name"] for j in (jobs["jobs"] if isinstance(jobs, dict) else jobs)]
    assert "listed" in names
    nodes = corral(one_node, "node", "ls")
    assert "node-a" in nodes.stdout and "H100" in nodes.stdout and "fake" in nodes.stdout
    data = json.loads(corral(one_node, "node", "ls", "--json").stdout)
    listed = data["nodes"] if isinstance(data, dict) else data
    assert listed[0]["gpu_backend"] == "fake" and len(listed[0]["gpus"]) == 4


def test_pending_reason_is_shown_by_job_get(one_node: Cluster) -> None:
    corral(
        one_node, "job", "run", "-d", "--name", "huge", "--gpus", "8", "--cpus", "0.1", "--", "true"
    )
    shown = wait_for(
        "the pending reason",
        lambda: "needs 8" in (r := corral(one_node, "job", "get", "huge")).stdout and r,
    )
    assert "pending" in shown.stdout
    assert "largest ready node has 4" in shown.stdout


def test_bad_input_gets_one_clear_line(one_node: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("command: python train.py\nreplicsa: 2\nresources:\n  gpus: H100:-1\n")
    result = corral(one_node, "job", "run", str(spec))
    assert_one_line_error(result, "replicsa: unknown field", "resources.gpus")
    assert result.returncode == 2
    corral(one_node, "job", "run", "-d", "--name", "taken", "--cpus", "0.1", "--", "true")
    again = corral(one_node, "job", "run", "-d", "--name", "taken", "--cpus", "0.1", "--", "true")
    assert_one_line_error(again, "already exists")
    missing = corral(one_node, "job", "get", "nope")
    assert_one_line_error(missing, "not found")


def test_an_unreachable_server_says_how_to_start_one(tmp_path: Path) -> None:
    port = free_port()
    result = corral(
        None,
        "job",
        "ls",
        env={
            "CORRAL_SERVER": f"http://127.0.0.1:{port}",
            "CORRAL_TOKEN": "x",
            "CORRAL_HOME": str(tmp_path),
        },
    )
    assert_one_line_error(result, "corral up")


def test_a_bad_token_is_refused_readably(one_node: Cluster) -> None:
    result = corral(one_node, "job", "ls", env={"CORRAL_TOKEN": "crl_wrong"})
    assert_one_line_error(result, "token")


def test_up_detach_runs_a_job_and_down_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"CORRAL_HOME": str(home)}
    for key in ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE"):
        env[key] = ""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    clean.update({"CORRAL_HOME": str(home), "NO_COLOR": "1"})
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *args],
            env=clean,
            capture_output=True,
            text=True,
            timeout=90,
        )

    up = run("up", "--detach", "--port", str(port))
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"http://127.0.0.1:{port}" in up.stdout
        config = json.loads((home / "config.json").read_text())
        assert config["server"] == f"http://127.0.0.1:{port}" and config["token"]
        twice = run("up", "--detach", "--port", str(port))
        assert twice.returncode != 0 and "Traceback" not in twice.stderr
        hello = run("job", "run", str(Path(__file__).parents[2] / "examples" / "hello-job.yaml"))
        assert hello.returncode == 0, hello.stderr
        assert "hello from corral" in hello.stdout
        nodes = json.loads(run("node", "ls", "--json").stdout)
        listed = nodes["nodes"] if isinstance(nodes, dict) else nodes
        assert [n["condition"] for n in listed] == ["ready"]
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert not (home / "up.json").exists()
    import httpx

    def refused() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
        except httpx.TransportError:
            return True
        return False

    wait_for("the server to be gone", refused, timeout=10)
