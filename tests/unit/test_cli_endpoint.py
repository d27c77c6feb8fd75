"""`corral endpoint|serve|gateway` and the SDK's endpoint calls against the real control plane
in-process (tests/support/cli.py), the clients on a virtual clock.

In-process there are no agents, so no replica ever passes its readiness probe. Where a test
needs what only an agent reports (a replica ready, or draining), `Reported` lays those states
over the server's own answer, through the real wire model (`EndpointView`): the rest of the
answer, and every other request, is the server's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.cli.endpointspec import EndpointFlags, build_deploy_spec, shell_line
from corral.cli.output import CliError
from corral.client import NotFound
from corral.spec.endpoint import EndpointSpec
from corral.spec.errors import SpecError
from corral.wire.api import EndpointView
from support.app import AppTransport, in_process
from support.cli import Cli, finish_job, submit_job

GATEWAY = "http://127.0.0.1:8080"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    """The app in-process, knowing the gateway's public address."""
    database_url = f"sqlite:///{tmp_path / 'corral.db'}"
    with in_process(database_url, tmp_path / "server", gateway_public_url=GATEWAY) as client:
        yield client


@pytest.fixture
def cli(server: TestClient, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(server, home, virtual_time=True)


class Reported(httpx.BaseTransport):
    """The app's answers, with `script[name]` laid over successive GETs of endpoint `name`
    (fields of EndpointView: what agents would have reported). Records (method, path) of
    the requests about endpoints."""

    def __init__(self, server: TestClient) -> None:
        self.app = AppTransport(server)
        self.script: dict[str, list[dict[str, Any]]] = {}
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "/endpoints" in request.url.path:
            self.sent.append((request.method, request.url.path))
        answer = self.app.handle_request(request)
        m = re.fullmatch(r"/v1/workspaces/[^/]+/endpoints/([^/]+)", request.url.path)
        if request.method != "GET" or m is None or answer.status_code != 200:
            return answer
        script = self.script.get(m[1])
        if not script:
            return answer
        real = json.loads(answer.read())
        view = EndpointView.model_validate({**real, **script.pop(0)})
        return httpx.Response(200, json=view.model_dump(mode="json"))


@pytest.fixture
def reported(cli: Cli, server: TestClient) -> Reported:
    cli.transport = Reported(server)
    assert isinstance(cli.transport, Reported)
    return cli.transport


def live(state: str, ready: int, desired: int, reason: str | None = None) -> dict[str, Any]:
    return {"state": state, "ready_replicas": ready, "desired_replicas": desired, "reason": reason}


def replica(job: str, state: str = "ready", node: str | None = "gpu-a", **over: Any) -> Any:
    """A replica as the server reports it once an agent has run (and probed) it."""
    now = time.time()
    body = {
        "job": job,
        "revision": 1,
        "state": state,
        "node": node,
        "url": f"http://10.0.0.1:{40000 + len(job)}" if node else None,
        "started_at": now - 120,
        "ready_at": now - 60 if state == "ready" else None,
    }
    body.update(over)
    return body


def stored(cli: Cli, name: str) -> EndpointSpec:
    """The spec the server keeps for endpoint `name`."""
    return cli.sdk().get_endpoint(name).spec


def endpoint_names(cli: Cli) -> list[str]:
    return [e.name for e in cli.sdk().list_endpoints()]


def replica_jobs(cli: Cli, name: str, count: int) -> list[str]:
    """The jobs of endpoint `name`'s first `count` replicas, once the server has made them."""
    deadline = time.monotonic() + 10
    while True:
        jobs = [r.job for r in cli.sdk().get_endpoint(name).replicas]
        if len(jobs) >= count:
            return jobs[:count]
        assert time.monotonic() < deadline, f"endpoint {name} has {len(jobs)} replicas"
        time.sleep(0.02)


# -- deploy: the spec it builds ----------------------------------------------------------


def test_inline_deploy_sends_the_spec_the_flags_say_and_prints_the_url(cli: Cli) -> None:
    result = cli(
        "endpoint",
        "deploy",
        "chat",
        "--gpus",
        "H100:1",
        "--memory",
        "16Gi",
        "--cpus",
        "4",
        "--max-replicas",
        "4",
        "--target-in-flight",
        "16",
        "--readiness-path",
        "/v1/models",
        "--readiness-timeout",
        "15m",
        "--auth",
        "public",
        "--env",
        "HF_HOME=/models",
        "--",
        "vllm",
        "serve",
        "Qwen/Qwen3-8B",
        "--port",
        "$PORT",
    )
    assert result.exit_code == 0, result.output
    spec = stored(cli, "chat")
    # The replica's shell expands $PORT; everything else is quoted as it was given.
    assert spec.command == 'vllm serve Qwen/Qwen3-8B --port "${PORT}"'
    assert (spec.resources.gpus.type, spec.resources.gpus.count) == ("H100", 1)
    assert spec.resources.memory == 16 * 1024 and spec.resources.cpus == 4
    assert (spec.min_replicas, spec.max_replicas, spec.target_in_flight) == (1, 4, 16)
    assert spec.readiness.path == "/v1/models" and spec.readiness.timeout == 900
    assert spec.auth == "public" and spec.env == {"HF_HOME": "/models"}
    out = result.stdout
    assert "deployed endpoint chat (revision 1, starting) in workspace default" in out
    assert f"url:      {GATEWAY}/ep/chat/" in out
    assert "corral endpoint get chat" in out and "corral endpoint logs -f chat" in out
    # $PORT is there: no warning of ours; the server's own (no H100 here) are shown.
    assert "$PORT" not in result.stderr
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines())


def test_without_a_known_gateway_the_path_is_printed_with_why(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'plain.db'}"
    with in_process(database_url, tmp_path / "plain") as plain:  # no gateway_public_url
        cli = Cli(plain, tmp_path)
        result = cli("endpoint", "deploy", "web", "--", "python -m http.server $PORT")
        assert result.exit_code == 0, result.output
        assert stored(cli, "web").command == "python -m http.server $PORT"  # as given
    assert "path:     /ep/web/ on the gateway" in result.stdout
    assert "CORRAL_GATEWAY_PUBLIC_URL" in result.stdout


def test_a_command_without_port_is_deployed_with_a_warning(cli: Cli) -> None:
    result = cli("endpoint", "deploy", "web", "--", "python", "-m", "http.server", "8000")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: the command does not mention $PORT")
    assert endpoint_names(cli) == ["web"]


def test_shell_line_leaves_only_port_for_the_replicas_shell(tmp_path: Path) -> None:
    argv = ["printf", "%s\\n", "--port=$PORT", "${PORT}", "$PORTS", "a b", "it's", "$HOME", ""]
    line = shell_line(argv)
    ran = subprocess.run(
        ["/bin/sh", "-c", line],
        env={"PORT": "41234", "PORTS": "no", "HOME": "no", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.split("\n")[:-1] == [
        "--port=41234",
        "41234",
        "$PORTS",
        "a b",
        "it's",
        "$HOME",
        "",
    ]


def test_scale_to_zero_after_implies_a_floor_of_zero(cli: Cli) -> None:
    result = cli(
        "endpoint", "deploy", "lazy", "--scale-to-zero-after", "5m", "--", "serve", "$PORT"
    )
    assert result.exit_code == 0, result.output
    spec = stored(cli, "lazy")
    assert spec.min_replicas == 0 and spec.scale_to_zero_after == 300


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["--gpus", "H100:-1"], "error: --gpus: "),
        (["--memory", "lots"], "error: --memory: "),
        (["--readiness-path", "health"], "error: --readiness-path: a probe path starts with '/'"),
        (["--readiness-timeout", "soon"], "error: --readiness-timeout: 'soon' is not a duration"),
        (["--auth", "anyone"], "error: --auth: "),
        (["--env", "PORT=1"], "error: --env: PORT is set by corral"),
        (["--target-in-flight", "0"], "error: --target-in-flight: "),
        (["--scale-to-zero-after", "never"], "error: --scale-to-zero-after: "),
        (
            ["--min-replicas", "3", "--max-replicas", "2"],
            "error: --max-replicas, --min-replicas: max_replicas (2) is below min_replicas (3)",
        ),
        (
            ["--scale-to-zero-after", "5m", "--min-replicas", "1"],
            "error: --min-replicas, --scale-to-zero-after: scale_to_zero_after needs "
            "min_replicas: 0",
        ),
        (["--timeout", "forever", "--wait"], "error: --timeout: 'forever' is not a duration"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_flag(cli: Cli, args: list[str], first_line: str) -> None:
    result = cli("endpoint", "deploy", "web", *args, "--", "serve", "$PORT")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(first_line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert endpoint_names(cli) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["Bad_Name", "--", "serve"], "error: NAME: 'Bad_Name' is not a valid endpoint name"),
        (["web"], "error: give an endpoint file, or a command after `--`, or --app"),
        (["web", "--app", "a.py:A", "--", "serve"], "error: give a command after `--` or --app"),
        (["web", "--"], "error: nothing to run after `--`"),
        (["web", "serve", "--", "x"], "error: unexpected arguments after web: serve"),
        (["web", "--app", "nope.py:App"], "error: --app: no file nope.py in "),
        (["web", "--app", "not a target"], "error: --app: 'not a target': expected FILE.py:Class"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Cli, args: list[str], needle: str) -> None:
    result = cli("endpoint", "deploy", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(needle), result.stderr
    assert "Traceback" not in result.output
    assert endpoint_names(cli) == []


def test_a_bad_file_names_the_file_and_each_field(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "ep.yaml"
    spec.write_text("name: web\ncommand: serve\nmin_replcas: 2\nreadiness: {path: health}\n")
    result = cli("endpoint", "deploy", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert all(line.startswith(f"error: {spec}: ") for line in lines)
    assert any("min_replcas: unknown field" in line for line in lines)
    assert any("readiness.path: a probe path starts with '/'" in line for line in lines)

    spec.write_text("kind: job\ncommand: python train.py\n")
    result = cli("endpoint", "deploy", str(spec))
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: {spec}: kind: 'job' is not an endpoint (run it with "
        "`corral job run`)\n"
    )
    assert endpoint_names(cli) == []


def test_a_file_with_flags_overrides_its_fields_and_keeps_the_rest(
    cli: Cli, tmp_path: Path
) -> None:
    spec = tmp_path / "ep.yaml"
    spec.write_text(
        "kind: endpoint\nname: web\ncommand: serve --port $PORT\nenv: {A: '1'}\n"
        "resources: {memory: 512Mi, gpus: 'H100:1'}\nreadiness: {path: /ready, timeout: 5m}\n"
        "max_replicas: 3\n"
    )
    result = cli(
        "endpoint", "deploy", str(spec), "--max-replicas", "8", "--env", "B=2", "--gpus", "A100"
    )
    assert result.exit_code == 0, result.output
    sent = stored(cli, "web")
    assert sent.name == "web" and sent.command == "serve --port $PORT"
    assert sent.max_replicas == 8 and sent.env == {"A": "1", "B": "2"}
    assert (sent.resources.gpus.type, sent.resources.gpus.count) == ("A100", 1)
    assert sent.resources.memory == 512
    assert (sent.readiness.path, sent.readiness.timeout) == ("/ready", 300)


def test_app_paths_become_absolute_so_a_replica_finds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "svc").mkdir(parents=True)
    (project / "svc" / "app.py").write_text("class Embedder: ...\n")
    monkeypatch.chdir(project)
    spec = build_deploy_spec(["emb"], None, EndpointFlags(app="svc/app.py:Embedder"), {})
    assert spec.app == f"{project / 'svc' / 'app.py'}:Embedder"
    # In a file: relative to where the command runs, else to the file.
    (project / "svc" / "ep.yaml").write_text("name: emb\napp: app.py:Embedder\n")
    spec = build_deploy_spec(["svc/ep.yaml"], None, EndpointFlags(), {})
    assert spec.app == f"{project / 'svc' / 'app.py'}:Embedder"
    # A module, or a path the nodes have under a working_dir, is left as it is.
    spec = build_deploy_spec(["emb"], None, EndpointFlags(app="pkg.mod:Embedder"), {})
    assert spec.app == "pkg.mod:Embedder"
    with pytest.raises(CliError, match=r"--app: no file gone.py in"):
        build_deploy_spec(["emb"], None, EndpointFlags(app="gone.py:Embedder"), {})
    with pytest.raises(SpecError) as bad:
        build_deploy_spec(["emb"], ["serve"], EndpointFlags(max_replicas=0), {})
    assert [e.path for e in bad.value.errors] == ["--max-replicas"]


def test_deploy_with_app_prints_the_path_every_node_must_see(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text("class Embedder: ...\n")
    monkeypatch.chdir(tmp_path)
    result = cli("endpoint", "deploy", "emb", "--app", "app.py:Embedder")
    assert result.exit_code == 0, result.output
    assert stored(cli, "emb").app == f"{tmp_path / 'app.py'}:Embedder"
    assert "every node must see this file" in result.stdout
    assert result.stderr == ""


def test_a_taken_name_is_exit_1_with_the_servers_words(cli: Cli) -> None:
    assert cli("endpoint", "deploy", "web", "--", "serve", "$PORT").exit_code == 0
    result = cli("endpoint", "deploy", "web", "--", "serve", "$PORT")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: endpoint 'web' already exists")
    assert "corral endpoint update" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- deploy --wait -----------------------------------------------------------------------


def test_wait_returns_once_ready(cli: Cli, reported: Reported) -> None:
    reported.script["chat"] = [
        live("starting", 0, 2, "starting"),
        live("scaling", 1, 2),
        live("ready", 2, 2),
    ]
    result = cli("endpoint", "deploy", "chat", "--min-replicas", "2", "--wait", "--", "s $PORT")
    assert result.exit_code == 0, result.output
    assert f"endpoint chat is ready: 2 of 2 replicas at {GATEWAY}/ep/chat/" in result.stderr
    gets = [p for m, p in reported.sent if m == "GET"]
    assert gets == ["/v1/workspaces/default/endpoints/chat"] * 3


def test_wait_times_out_with_the_servers_reason(cli: Cli) -> None:
    result = cli("endpoint", "deploy", "chat", "--wait", "--timeout", "90", "--", "s $PORT")
    assert result.exit_code == 1, result.output
    view = cli.sdk().get_endpoint("chat")
    assert view.state == "starting" and view.reason  # no node here: it never gets ready
    assert result.stderr.startswith(
        "error: endpoint 'chat' did not become ready within 90 s (it is starting, 0 of 1 "
        "replicas ready): "
    ), result.stderr
    assert "corral endpoint logs chat" in result.stderr
    assert 90 <= cli.now < 91  # by the virtual clock: the test itself did not wait
    assert "deployed endpoint chat" in result.stdout


def test_wait_on_scale_to_zero_says_the_first_request_starts_it(cli: Cli) -> None:
    result = cli("endpoint", "deploy", "lazy", "--min-replicas", "0", "--wait", "--", "s $PORT")
    assert result.exit_code == 0, result.output
    assert "is scaled to zero: the first request starts a replica" in result.stderr


# -- ls, get -----------------------------------------------------------------------------


def test_ls_table_and_json(cli: Cli) -> None:
    assert cli("endpoint", "deploy", "chat", "--max-replicas", "4", "--", "s $PORT").exit_code == 0
    deployed = cli("endpoint", "deploy", "lazy", "--scale-to-zero-after", "10m", "--", "s $PORT")
    assert deployed.exit_code == 0
    views = {v.name: v for v in cli.sdk().list_endpoints()}
    result = cli("endpoint", "ls")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.strip().splitlines()
    assert re.split(r"\s{2,}", header.strip()) == [
        "NAME",
        "STATE",
        "READY/DESIRED",
        "MIN..MAX",
        "URL",
        "REASON",
    ]
    chat = next(r for r in rows if r.startswith("chat"))
    assert re.split(r"\s{2,}", chat.strip())[:5] == [
        "chat",
        views["chat"].state,
        f"0/{views['chat'].desired_replicas}",
        "1..4",
        f"{GATEWAY}/ep/chat/",
    ]
    lazy = next(r for r in rows if r.startswith("lazy"))
    assert re.split(r"\s{2,}", lazy.strip())[:5] == [
        "lazy",
        "scaled-to-zero",
        "0/0",
        "0..1",
        f"{GATEWAY}/ep/lazy/",
    ]
    data = json.loads(cli("endpoint", "ls", "--json").stdout)
    assert sorted(e["name"] for e in data["endpoints"]) == ["chat", "lazy"]
    assert EndpointSpec.model_validate(data["endpoints"][0]["spec"]).resources.memory == 512


def test_ls_of_nothing_says_how_to_deploy(cli: Cli) -> None:
    result = cli("endpoint", "ls")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no endpoints in workspace default; deploy one: corral endpoint deploy" in result.stderr


def test_get_shows_details_and_replicas(cli: Cli, reported: Reported) -> None:
    deployed = cli(
        "endpoint", "deploy", "chat", "--gpus", "H100:1", "--memory", "16Gi", "--max-replicas",
        "4", "--", "vllm", "serve", "m", "--port", "$PORT",
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    reported.script["chat"] = [
        {
            "state": "updating",
            "revision": 2,
            "ready_replicas": 1,
            "desired_replicas": 2,
            "reason": "rolling out revision 2: 1 of 2 ready",
            "replicas": [
                replica("chat-r1-aaaaaa", node="gpu-a", revision=1),
                replica("chat-r2-bbbbbb", state="starting", node=None, revision=2),
            ],
        }
    ] * 2
    result = cli("endpoint", "get", "chat")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in (
        "updating",
        "rolling out revision 2: 1 of 2 ready",
        f"{GATEWAY}/ep/chat/",
        "1 ready of 2 desired · revision 2",
        "1..4 replicas · target 8 requests in flight per replica",
        'vllm serve m --port "${PORT}"',
        "H100:1, 1 CPU, 16Gi memory per replica",
        "GET /health answers 2xx within 10m",
        "a token of workspace default",
    ):
        assert needle in out, (needle, out)
    header = next(line for line in out.splitlines() if line.lstrip().startswith("JOB"))
    assert re.split(r"\s{2,}", header.strip()) == [
        "JOB",
        "REV",
        "STATE",
        "NODE",
        "URL",
        "READY SINCE",
        "REASON",
    ]
    first = next(line for line in out.splitlines() if line.startswith("chat-r1-aaaaaa"))
    cells = re.split(r"\s{2,}", first.strip())
    assert cells[:4] == ["chat-r1-aaaaaa", "1", "ready", "gpu-a"] and cells[5].endswith("ago")
    second = next(line for line in out.splitlines() if line.startswith("chat-r2-bbbbbb"))
    assert re.split(r"\s{2,}", second.strip()) == [
        "chat-r2-bbbbbb",
        "2",
        "starting",
        "-",
        "-",
        "-",
        "-",
    ]
    data = json.loads(cli("endpoint", "get", "chat", "--json").stdout)
    assert data["replicas"][1]["job"] == "chat-r2-bbbbbb" and data["revision"] == 2


def test_get_shows_each_replicas_reason_and_the_autoscaler_apart(cli: Cli) -> None:
    assert cli("endpoint", "deploy", "chat", "--", "s $PORT").exit_code == 0
    [job] = replica_jobs(cli, "chat", 1)
    deadline = time.monotonic() + 10
    while (view := cli.sdk().get_endpoint("chat")).replicas[0].reason in (
        None,
        "waiting for the scheduler",
    ):  # until the scheduler has said why it waits; that stays, with no node here
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result = cli("endpoint", "get", "chat")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith(job))
    pending = view.replicas[0].reason
    assert pending and re.split(r"\s{2,}", row.strip())[-1] == pending  # why it waits
    autoscaler = next(line for line in result.stdout.splitlines() if "autoscaler" in line)
    assert view.autoscaler and view.autoscaler in autoscaler


def test_unknown_endpoint_is_one_line_and_exit_1(cli: Cli) -> None:
    result = cli("endpoint", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: endpoint 'nope' in workspace 'default' not found\n"


# -- logs --------------------------------------------------------------------------------


def test_logs_default_to_the_first_ready_replica(
    cli: Cli, reported: Reported, server: TestClient
) -> None:
    assert cli("endpoint", "deploy", "chat", "--min-replicas", "2", "--", "s $PORT").exit_code == 0
    first, second = replica_jobs(cli, "chat", 2)
    finish_job(server, first, {0: ["loading weights\n"]}, state="running")
    finish_job(server, second, {0: ["INFO loaded\n", "INFO serving"]}, state="running")
    replicas = [replica(first, state="starting"), replica(second, node="gpu-b")]
    reported.script["chat"] = [{"replicas": replicas}] * 3
    result = cli("endpoint", "logs", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "INFO loaded\nINFO serving\n"
    assert f"replica 1: job {second} (revision 1, ready, on gpu-b)" in result.stderr

    result = cli("endpoint", "logs", "chat", "--replica", "0")
    assert result.exit_code == 0 and result.stdout == "loading weights\n"

    result = cli("endpoint", "logs", "chat", "--replica", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --replica 2: endpoint chat has 2 live replicas (0..1)")


def test_logs_follow_reads_until_the_replica_ends(
    cli: Cli, reported: Reported, server: TestClient
) -> None:
    assert cli("endpoint", "deploy", "chat", "--", "s $PORT").exit_code == 0
    [job] = replica_jobs(cli, "chat", 1)
    reported.script["chat"] = [{"replicas": [replica(job)]}]
    finish_job(server, job, {0: ["served 3 requests\n", "drained\n"]}, state="succeeded")
    result = cli("endpoint", "logs", "-f", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "served 3 requests\ndrained\n"


def test_logs_without_a_live_replica_show_the_last_one_that_ended(
    cli: Cli, reported: Reported, server: TestClient
) -> None:
    for name in ("chat", "chatter"):
        assert cli("endpoint", "deploy", name, "--", "s $PORT").exit_code == 0
    [crashed] = replica_jobs(cli, "chat", 1)
    finish_job(server, crashed, {0: ["CUDA out of memory\n"]}, state="failed", exit_code=3)
    [other] = replica_jobs(cli, "chatter", 1)  # another endpoint's, ended later
    finish_job(server, other, {0: ["not this one\n"]}, state="failed", exit_code=1)
    submit_job(server, "train")
    finish_job(server, "train", {0: ["nor this\n"]}, state="failed", exit_code=1)
    # Between a crash and its replacement no replica is live.
    reported.script["chat"] = [live("starting", 0, 1, "replicas keep failing") | {"replicas": []}]
    result = cli("endpoint", "logs", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "CUDA out of memory\n"
    assert f"no live replica; the last one was job {crashed} (failed, exit code 3)" in (
        result.stderr
    )
    assert cli("endpoint", "deploy", "fresh", "--", "s $PORT").exit_code == 0
    reported.script["fresh"] = [live("starting", 0, 1, "replicas keep failing") | {"replicas": []}]
    result = cli("endpoint", "logs", "fresh")
    assert result.exit_code == 1
    assert (
        result.stderr
        == "error: endpoint fresh has no replicas yet (starting: replicas keep failing)\n"
    )


# -- update, delete ----------------------------------------------------------------------


def deploy_chat(cli: Cli) -> None:
    deployed = cli(
        "endpoint", "deploy", "chat", "--memory", "16Gi", "--max-replicas", "4", "--",
        "vllm", "serve", "m", "--port", "$PORT",
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output


def test_update_with_flags_changes_the_current_spec_where_they_say(cli: Cli) -> None:
    deploy_chat(cli)
    result = cli("endpoint", "update", "chat", "--max-replicas", "8", "--env", "A=2", "--detach")
    assert result.exit_code == 0, result.output
    view = cli.sdk().get_endpoint("chat")
    sent = view.spec
    assert view.revision == 2
    assert sent.max_replicas == 8 and sent.env == {"A": "2"}
    assert sent.command == 'vllm serve m --port "${PORT}"' and sent.resources.memory == 16384
    assert "updated endpoint chat (revision 2, " in result.stdout


def test_update_with_a_command_or_a_file(cli: Cli, tmp_path: Path) -> None:
    deploy_chat(cli)
    result = cli("endpoint", "update", "chat", "--detach", "--", "sglang", "--port", "$PORT")
    assert result.exit_code == 0, result.output
    assert stored(cli, "chat").command == 'sglang --port "${PORT}"'
    spec = tmp_path / "chat.yaml"
    spec.write_text("command: serve $PORT\nmin_replicas: 2\n")
    result = cli("endpoint", "update", "chat", str(spec), "--detach")
    assert result.exit_code == 0, result.output
    sent = stored(cli, "chat")
    # The file replaces the spec: max_replicas is no longer 4 but the default.
    assert (sent.name, sent.min_replicas, sent.max_replicas) == ("chat", 2, None)
    spec.write_text("name: other\ncommand: serve $PORT\n")
    result = cli("endpoint", "update", "chat", str(spec), "--detach")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {spec} describes endpoint 'other', not 'chat'")


def test_update_of_nothing_or_of_no_such_endpoint(cli: Cli) -> None:
    result = cli("endpoint", "update", "chat")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: nothing to change")
    result = cli("endpoint", "update", "chat", "--max-replicas", "2")
    assert result.exit_code == 1
    assert "endpoint 'chat' in workspace 'default' not found" in result.stderr


def test_update_wait_waits_for_the_new_revision(cli: Cli, reported: Reported) -> None:
    deploy_chat(cli)
    reported.sent.clear()
    reported.script["chat"] = [
        live("ready", 2, 2),  # the GET for the current spec
        live("updating", 2, 2, "rolling out revision 2: 1 of 2 ready"),
        live("ready", 2, 2),
    ]
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert [m for m, _ in reported.sent] == ["GET", "PUT", "GET", "GET"]
    assert "endpoint chat is ready" in result.stderr
    assert stored(cli, "chat").resources.cpus == 2


def test_update_wait_does_not_wait_for_old_replicas_to_drain(cli: Cli, reported: Reported) -> None:
    deploy_chat(cli)
    reported.sent.clear()
    replicas = [
        replica("chat-r1-aaaaaa", state="draining", revision=1),
        replica("chat-r2-bbbbbb", revision=2),
    ]
    reported.script["chat"] = [
        live("ready", 1, 1) | {"replicas": replicas},
        live("updating", 1, 1, "draining revision 1") | {"replicas": replicas, "revision": 2},
    ]
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert [m for m, _ in reported.sent] == ["GET", "PUT", "GET"]
    assert "is ready: 1 of 1 replicas at" in result.stderr
    assert "1 old replica draining" in result.stderr


def test_update_waits_by_default_and_a_stuck_rollout_exits_1_with_its_reason(cli: Cli) -> None:
    deploy_chat(cli)
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--timeout", "90")
    assert result.exit_code == 1, result.output
    view = cli.sdk().get_endpoint("chat")
    assert view.revision == 2 and view.reason  # no node here: the rollout cannot finish
    assert result.stderr.startswith(
        "error: endpoint 'chat' did not roll out revision 2 within 90 s (it is "
    ), result.stderr
    assert 90 <= cli.now < 91


def test_update_detach_returns_at_once(cli: Cli, reported: Reported) -> None:
    deploy_chat(cli)
    reported.sent.clear()
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--detach")
    assert result.exit_code == 0, result.output
    assert [m for m, _ in reported.sent] == ["GET", "PUT"]
    assert cli.now == 0


def test_delete_says_it_drains(cli: Cli) -> None:
    assert cli("endpoint", "deploy", "chat", "--min-replicas", "2", "--", "s $PORT").exit_code == 0
    replica_jobs(cli, "chat", 2)
    result = cli("endpoint", "delete", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "deleting endpoint chat: its 2 replicas finish their open requests and stop, "
        "then it is gone\n"
    )
    assert cli.sdk().get_endpoint("chat").state == "deleting"


def test_delete_of_one_replica_reads_in_the_singular(cli: Cli) -> None:
    assert cli("endpoint", "deploy", "solo", "--", "s $PORT").exit_code == 0
    replica_jobs(cli, "solo", 1)
    result = cli("endpoint", "delete", "solo")
    assert result.exit_code == 0, result.output
    assert "its replica finishes its open requests and stops" in result.stdout


def test_workspace_flag_and_a_spec_workspace_select_the_workspace(cli: Cli, tmp_path: Path) -> None:
    for ws in ("research", "vision"):
        assert cli("workspace", "create", ws).exit_code == 0
    assert cli("endpoint", "deploy", "x", "-w", "research", "--", "s $PORT").exit_code == 0
    spec = tmp_path / "y.yaml"
    spec.write_text("name: y\nworkspace: vision\ncommand: s $PORT\n")
    assert cli("endpoint", "deploy", str(spec)).exit_code == 0
    assert [v.name for v in cli.sdk("research").list_endpoints()] == ["x"]
    assert [v.name for v in cli.sdk("vision").list_endpoints()] == ["y"]
    assert "x" in cli("endpoint", "ls", "-w", "research").stdout
    missing = cli("--workspace", "vision", "endpoint", "get", "x")
    assert missing.stderr == "error: endpoint 'x' in workspace 'vision' not found\n"
    clash = cli("endpoint", "deploy", str(spec), "-w", "research")
    assert clash.exit_code == 2
    assert "the endpoint file says workspace 'vision' but --workspace says 'research'" in (
        clash.stderr
    )


# -- the SDK -----------------------------------------------------------------------------


def test_client_endpoint_calls(cli: Cli) -> None:
    assert cli("workspace", "create", "ml").exit_code == 0
    client = cli.sdk()
    view = client.deploy_endpoint(EndpointSpec(name="a", workspace="ml", command="s $PORT"))
    assert (view.name, view.workspace, view.state) == ("a", "ml", "starting")
    ml = cli.sdk("ml")
    assert [v.name for v in ml.list_endpoints()] == ["a"]
    assert ml.get_endpoint("a").path == "/ep/a/"
    updated = ml.update_endpoint("a", EndpointSpec(command="s2 $PORT"))
    assert updated.revision == 2 and updated.spec.command == "s2 $PORT"
    assert ml.delete_endpoint("a").state == "deleting"
    with pytest.raises(NotFound):
        ml.get_endpoint("b")
    # Waiting on it fails at once: it is being deleted, or (no replicas to drain) gone.
    with pytest.raises(Exception, match=r"is being deleted|not found"):
        ml.wait_endpoint("a", timeout=5)


# -- serve, gateway ----------------------------------------------------------------------


def test_serve_of_a_missing_target_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    result = cli("serve", str(tmp_path / "nope.py") + ":App")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "no such file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_gateway_runs_with_the_configured_server_and_token(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.gateway

    calls: list[tuple[Any, ...]] = []

    def fake_run(port: int, server: str | None = None, **kw: Any) -> None:
        calls.append((port, server, kw))

    monkeypatch.setattr(corral.gateway, "run_gateway", fake_run)
    at = {"CORRAL_SERVER": "http://corral.test:7390"}
    result = cli("gateway", "--port", "9090", env=at)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    port, server, kw = calls[0]
    assert (port, server) == (9090, "http://corral.test:7390")
    assert {k: kw[k] for k in ("host", "token", "gateway_id")} == {
        "host": "0.0.0.0",
        "token": "crl_admin",
        "gateway_id": None,
    }

    assert cli("workspace", "create", "ml").exit_code == 0
    member = cli("token", "create", "--role", "member", "-w", "ml").stdout.strip()
    result = cli("gateway", token=member, env=at)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: the gateway needs a cluster-admin token; this one is member of workspace ml"
    )
    assert len(calls) == 1


def test_gateway_without_a_token_says_where_to_get_one(cli: Cli) -> None:
    (cli.home / "config.json").write_text(json.dumps({"server": "http://corral.test:7390"}))
    result = cli("gateway", token=None)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: the gateway needs a cluster-admin token")


# -- startup -----------------------------------------------------------------------------

HEAVY = ("httpx", "pydantic", "yaml", "corral.client", "corral.spec", "corral.gateway")
PROBE = """
import atexit, sys
atexit.register(lambda: sys.__stdout__.write("\\nMODULES " + " ".join(sorted(sys.modules))))
sys.argv = ["corral", *sys.argv[1:]]
from corral.cli.main import main
main()
"""


@pytest.mark.parametrize(
    "args",
    [
        ["endpoint", "--help"],
        ["endpoint", "deploy", "--help"],
        ["serve", "--help"],
        ["gateway", "--help"],
    ],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NO_COLOR": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.rsplit("MODULES ", 1)[1].split())
    loaded = sorted(m for m in modules for h in HEAVY if m == h or m.startswith(h + "."))
    assert loaded == [], f"`corral {' '.join(args)}` imported {loaded}"


def test_the_empty_ls_hint_deploys_something_that_becomes_ready(cli: Cli) -> None:
    result = cli("endpoint", "ls")
    hint = result.stderr.split("deploy one: ", 1)[1].strip()
    assert hint == (
        "corral endpoint deploy hello --readiness-path / --wait -- python3 -m http.server '$PORT'"
    )
