"""`corral endpoint|serve|gateway` and the SDK's endpoint calls, against an in-memory API
behind httpx.MockTransport (the `CliDeps.client_factory` seam) and a virtual clock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.endpointspec import EndpointFlags, build_deploy_spec, shell_line
from corral.cli.main import build_app
from corral.cli.output import CliError
from corral.client import Client, NotFound, Settings
from corral.spec.endpoint import EndpointSpec
from corral.spec.errors import SpecError

NOW = 1_700_000_000.0
GATEWAY = "http://127.0.0.1:8080"


def spec_body(name: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "workspace": "default",
        "command": 'vllm serve m --port "${PORT}"',
        "resources": {"gpus": {"count": 1, "type": "H100"}, "memory": "16384Mi"},
        "min_replicas": 1,
        "max_replicas": 4,
    }
    spec.update(over)
    return spec


def replica(job: str, state: str = "ready", node: str | None = "gpu-a", **over: Any) -> Any:
    body = {
        "job": job,
        "revision": 1,
        "state": state,
        "node": node,
        "url": f"http://10.0.0.1:{40000 + len(job)}" if node else None,
        "started_at": NOW - 120,
        "ready_at": NOW - 60 if state == "ready" else None,
    }
    body.update(over)
    return body


class FakeApi:
    """Enough of the endpoints API (and jobs, logs, whoami) to drive the CLI; it records what
    it was sent. `script[name]` lists (state, ready, desired, reason) for successive GETs."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sent: list[tuple[str, str, Any]] = []
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.script: dict[str, list[tuple[str, int, int, str | None]]] = {}
        self.gateway_url: str | None = GATEWAY
        self.whoami = {"token": "tok_1", "role": "admin", "workspace": None}
        self.now = 0.0  # the clients' clock: advanced only by their sleeps

    def client(self, settings: Settings) -> Client:
        c = Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=httpx.MockTransport(self.handle),
        )
        c._clock = lambda: self.now
        c._sleep = self.sleep
        return c

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def add(self, name: str, state: str = "ready", **over: Any) -> dict[str, Any]:
        view: dict[str, Any] = {
            "name": name,
            "workspace": "default",
            "state": state,
            "path": f"/ep/{name}/",
            "url": f"{self.gateway_url}/ep/{name}/" if self.gateway_url else None,
            "revision": 1,
            "desired_replicas": 2,
            "ready_replicas": 2,
            "min_replicas": 1,
            "max_replicas": 4,
            "reason": None,
            "spec": spec_body(name),
            "replicas": [],
            "created_at": NOW - 600,
            "updated_at": NOW - 300,
        }
        view.update(over)
        self.endpoints[name] = view
        return view

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        self.sent.append((method, path, body))
        if path == "/v1/whoami":
            return httpx.Response(200, json=self.whoami)
        m = re.fullmatch(r"/v1/workspaces/([^/]+)/endpoints(?:/([^/]+))?", path)
        if m is not None:
            return self._endpoint(method, m[1], m[2], body)
        m = re.fullmatch(r"/v1/workspaces/([^/]+)/jobs(?:/([^/]+))?(/logs)?", path)
        if m is not None:
            return self._job(m[2], m[3], request)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _endpoint(self, method: str, ws: str, name: str | None, body: Any) -> httpx.Response:
        if name is None and method == "POST":
            name = body.get("name") or "ep-brisk-otter"
            if name in self.endpoints:
                return error(409, "conflict", f"endpoint '{name}' already exists")
            min_r = body.get("min_replicas", 1)
            view = self.add(
                name,
                state="starting" if min_r else "scaled-to-zero",
                workspace=ws,
                spec={**body, "name": name, "workspace": ws},
                desired_replicas=min_r,
                ready_replicas=0,
                min_replicas=min_r,
                max_replicas=body.get("max_replicas") or max(1, min_r),
                reason="starting",
            )
            return httpx.Response(201, json=view)
        if name is None:
            return httpx.Response(200, json={"endpoints": list(self.endpoints.values())})
        if name not in self.endpoints:
            return error(404, "not_found", f"endpoint '{name}' in workspace '{ws}' not found")
        view = self.endpoints[name]
        if method == "PUT":
            view.update(spec={**body, "name": name}, revision=view["revision"] + 1)
            view.update(state="updating", reason=f"rolling out revision {view['revision']}")
        elif method == "DELETE":
            view.update(state="deleting", reason="deleting: draining its replicas")
            return httpx.Response(202, json=view)
        elif self.script.get(name):
            state, ready, desired, reason = self.script[name].pop(0)
            view.update(state=state, ready_replicas=ready, desired_replicas=desired, reason=reason)
        return httpx.Response(200, json=view)

    def _job(self, name: str | None, logs: str | None, request: httpx.Request) -> httpx.Response:
        if name is None:
            return httpx.Response(200, json={"jobs": list(self.jobs.values())})
        if name not in self.jobs:
            return error(404, "not_found", f"job '{name}' not found")
        if logs is None:
            return httpx.Response(200, json=self.jobs[name])
        text = self.logs.get(name, "")
        offset = int(request.url.params["offset"])
        page = {
            "replica": 0,
            "attempt": 1,
            "data": text[offset:],
            "offset": offset,
            "next_offset": len(text),
            "complete": self.jobs[name]["state"] in ("succeeded", "failed", "cancelled"),
        }
        return httpx.Response(200, json=page)

    def add_job(self, name: str, state: str = "running", **over: Any) -> None:
        self.jobs[name] = {
            "name": name,
            "workspace": "default",
            "state": state,
            "spec": {"name": name, "entrypoint": ["/bin/sh", "-c", "serve"]},
            "attempt": 1,
            "restarts": 0,
            "submitted_at": NOW - 100,
            **over,
        }


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "fields": []}})


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    config = {"server": "http://corral.test:7390", "token": "crl_good", "workspace": "default"}
    (home / "config.json").write_text(json.dumps(config))
    return home


class Cli:
    def __init__(self, api: FakeApi, home: Path) -> None:
        self.api = api
        self.home = home
        self.runner = CliRunner(
            env={
                "CORRAL_SERVER": None,
                "CORRAL_TOKEN": None,
                "CORRAL_WORKSPACE": None,
                "NO_COLOR": "1",
                "COLUMNS": "200",
            }
        )

    def __call__(self, *args: str) -> Any:
        app = build_app(CliDeps(client_factory=self.api.client, home=self.home))
        return self.runner.invoke(app, list(args))


@pytest.fixture
def cli(api: FakeApi, home: Path) -> Cli:
    return Cli(api, home)


def posted(api: FakeApi) -> dict[str, Any]:
    bodies = [body for method, _, body in api.sent if method == "POST"]
    assert len(bodies) == 1, api.sent
    result: dict[str, Any] = bodies[0]
    return result


# -- deploy: the spec it builds ----------------------------------------------------------


def test_inline_deploy_sends_the_spec_the_flags_say_and_prints_the_url(
    cli: Cli, api: FakeApi
) -> None:
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
    body = posted(api)
    assert body["name"] == "chat"
    # The replica's shell expands $PORT; everything else is quoted as it was given.
    assert body["command"] == 'vllm serve Qwen/Qwen3-8B --port "${PORT}"'
    spec = EndpointSpec.model_validate(body)
    assert (spec.resources.gpus.type, spec.resources.gpus.count) == ("H100", 1)
    assert spec.resources.memory == 16 * 1024 and spec.resources.cpus == 4
    assert (spec.min_replicas, spec.max_replicas, spec.target_in_flight) == (1, 4, 16)
    assert spec.readiness.path == "/v1/models" and spec.readiness.timeout == 900
    assert spec.auth == "public" and spec.env == {"HF_HOME": "/models"}
    out = result.stdout
    assert "deployed endpoint chat (revision 1, starting) in workspace default" in out
    assert f"url:      {GATEWAY}/ep/chat/" in out
    assert "corral endpoint get chat" in out and "corral endpoint logs -f chat" in out
    assert result.stderr == ""  # $PORT is there: no warning


def test_without_a_known_gateway_the_path_is_printed_with_why(cli: Cli, api: FakeApi) -> None:
    api.gateway_url = None
    result = cli("endpoint", "deploy", "web", "--", "python -m http.server $PORT")
    assert result.exit_code == 0, result.output
    assert posted(api)["command"] == "python -m http.server $PORT"  # a shell line as given
    assert "path:     /ep/web/ on the gateway" in result.stdout
    assert "CORRAL_GATEWAY_PUBLIC_URL" in result.stdout


def test_a_command_without_port_is_deployed_with_a_warning(cli: Cli, api: FakeApi) -> None:
    result = cli("endpoint", "deploy", "web", "--", "python", "-m", "http.server", "8000")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: the command does not mention $PORT")


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


def test_scale_to_zero_after_implies_a_floor_of_zero(cli: Cli, api: FakeApi) -> None:
    result = cli(
        "endpoint", "deploy", "lazy", "--scale-to-zero-after", "5m", "--", "serve", "$PORT"
    )
    assert result.exit_code == 0, result.output
    body = posted(api)
    assert body["min_replicas"] == 0 and body["scale_to_zero_after"] == 300


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
def test_a_bad_flag_is_one_line_naming_the_flag(
    cli: Cli, api: FakeApi, args: list[str], first_line: str
) -> None:
    result = cli("endpoint", "deploy", "web", *args, "--", "serve", "$PORT")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(first_line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert api.requests == []


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
def test_bad_input_is_one_line_and_exit_2(
    cli: Cli, api: FakeApi, args: list[str], needle: str
) -> None:
    result = cli("endpoint", "deploy", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(needle), result.stderr
    assert "Traceback" not in result.output
    assert api.requests == []


def test_a_bad_file_names_the_file_and_each_field(cli: Cli, api: FakeApi, tmp_path: Path) -> None:
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
    assert api.requests == []


def test_a_file_with_flags_overrides_its_fields_and_keeps_the_rest(
    cli: Cli, api: FakeApi, tmp_path: Path
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
    sent = EndpointSpec.model_validate(posted(api))
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
    cli: Cli, api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text("class Embedder: ...\n")
    monkeypatch.chdir(tmp_path)
    result = cli("endpoint", "deploy", "emb", "--app", "app.py:Embedder")
    assert result.exit_code == 0, result.output
    assert posted(api)["app"] == f"{tmp_path / 'app.py'}:Embedder"
    assert "every node must see this file" in result.stdout
    assert result.stderr == ""


def test_a_refused_spec_is_exit_2_and_a_taken_name_exit_1(cli: Cli, api: FakeApi) -> None:
    api.add("web")
    result = cli("endpoint", "deploy", "web", "--", "serve", "$PORT")
    assert result.exit_code == 1
    assert result.stderr == "error: endpoint 'web' already exists\n"


# -- deploy --wait -----------------------------------------------------------------------


def test_wait_returns_once_ready(cli: Cli, api: FakeApi) -> None:
    api.script["chat"] = [
        ("starting", 0, 2, "starting"),
        ("scaling", 1, 2, None),
        ("ready", 2, 2, None),
    ]
    result = cli("endpoint", "deploy", "chat", "--min-replicas", "2", "--wait", "--", "s $PORT")
    assert result.exit_code == 0, result.output
    assert f"endpoint chat is ready: 2 of 2 replicas at {GATEWAY}/ep/chat/" in result.stderr
    gets = [p for m, p, _ in api.sent if m == "GET"]
    assert gets == ["/v1/workspaces/default/endpoints/chat"] * 3


def test_wait_times_out_with_the_servers_reason(cli: Cli, api: FakeApi) -> None:
    why = "replicas keep failing (3 in 10m, last: exit code 1); next try in 4s"
    api.script["chat"] = [("starting", 0, 1, why)] * 1000
    result = cli("endpoint", "deploy", "chat", "--wait", "--timeout", "90", "--", "s $PORT")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "error: endpoint 'chat' did not become ready within 90 s (it is starting, 0 of 1 "
        f"replicas ready): {why}"
    ), result.stderr
    assert "corral endpoint logs chat" in result.stderr
    assert 90 <= api.now < 91  # by the virtual clock: the test itself did not wait
    assert "deployed endpoint chat" in result.stdout


def test_wait_on_scale_to_zero_says_the_first_request_starts_it(cli: Cli, api: FakeApi) -> None:
    result = cli("endpoint", "deploy", "lazy", "--min-replicas", "0", "--wait", "--", "s $PORT")
    assert result.exit_code == 0, result.output
    assert "is scaled to zero: the first request starts a replica" in result.stderr


# -- ls, get -----------------------------------------------------------------------------


def test_ls_table_and_json(cli: Cli, api: FakeApi) -> None:
    api.add("chat")
    api.gateway_url = None
    api.add(
        "lazy",
        state="scaled-to-zero",
        desired_replicas=0,
        ready_replicas=0,
        min_replicas=0,
        reason="no requests for 10m",
    )
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
    assert re.split(r"\s{2,}", chat.strip()) == [
        "chat",
        "ready",
        "2/2",
        "1..4",
        f"{GATEWAY}/ep/chat/",
    ]
    lazy = next(r for r in rows if r.startswith("lazy"))
    assert re.split(r"\s{2,}", lazy.strip()) == [
        "lazy",
        "scaled-to-zero",
        "0/0",
        "0..4",
        "/ep/lazy/",
        "no requests for 10m",
    ]
    data = json.loads(cli("endpoint", "ls", "--json").stdout)
    assert [e["name"] for e in data["endpoints"]] == ["chat", "lazy"]
    assert EndpointSpec.model_validate(data["endpoints"][0]["spec"]).resources.memory == 16384


def test_ls_of_nothing_says_how_to_deploy(cli: Cli) -> None:
    result = cli("endpoint", "ls")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no endpoints in workspace default; deploy one: corral endpoint deploy" in result.stderr


def test_get_shows_details_and_replicas(cli: Cli, api: FakeApi) -> None:
    api.add(
        "chat",
        state="updating",
        revision=2,
        reason="rolling out revision 2: 1 of 2 ready",
        replicas=[
            replica("chat-r1-aaaaaa", node="gpu-a", revision=1),
            replica("chat-r2-bbbbbb", state="starting", node=None, revision=2),
        ],
    )
    result = cli("endpoint", "get", "chat")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in (
        "updating",
        "rolling out revision 2: 1 of 2 ready",
        f"{GATEWAY}/ep/chat/",
        "2 ready of 2 desired · revision 2",
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


def test_unknown_endpoint_is_one_line_and_exit_1(cli: Cli) -> None:
    result = cli("endpoint", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: endpoint 'nope' in workspace 'default' not found\n"


# -- logs --------------------------------------------------------------------------------


def test_logs_default_to_the_first_ready_replica(cli: Cli, api: FakeApi) -> None:
    api.add(
        "chat",
        replicas=[
            replica("chat-r1-aaaaaa", state="starting"),
            replica("chat-r1-bbbbbb", node="gpu-b"),
        ],
    )
    api.add_job("chat-r1-bbbbbb")
    api.logs["chat-r1-bbbbbb"] = "INFO loaded\nINFO serving"
    result = cli("endpoint", "logs", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "INFO loaded\nINFO serving\n"
    assert "replica 1: job chat-r1-bbbbbb (revision 1, ready, on gpu-b)" in result.stderr

    api.add_job("chat-r1-aaaaaa")
    api.logs["chat-r1-aaaaaa"] = "loading weights\n"
    result = cli("endpoint", "logs", "chat", "--replica", "0")
    assert result.exit_code == 0 and result.stdout == "loading weights\n"

    result = cli("endpoint", "logs", "chat", "--replica", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --replica 2: endpoint chat has 2 live replicas (0..1)")


def test_logs_follow_reads_until_the_replica_ends(cli: Cli, api: FakeApi) -> None:
    api.add("chat", replicas=[replica("chat-r1-aaaaaa")])
    api.add_job("chat-r1-aaaaaa", state="cancelled")
    api.logs["chat-r1-aaaaaa"] = "served 3 requests\ndrained\n"
    result = cli("endpoint", "logs", "-f", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "served 3 requests\ndrained\n"


def test_logs_without_a_live_replica_show_the_last_one_that_ended(cli: Cli, api: FakeApi) -> None:
    api.add("chat", state="starting", ready_replicas=0, reason="replicas keep failing")
    api.add_job("chat-r1-aaaaaa", state="failed", exit_code=1, submitted_at=NOW - 50)
    api.add_job("chat-r1-bbbbbb", state="failed", exit_code=3, submitted_at=NOW - 10)
    api.add_job("chatter-r1-cccccc", state="failed", submitted_at=NOW)  # another endpoint's
    api.add_job("train", state="failed", submitted_at=NOW)
    api.logs["chat-r1-bbbbbb"] = "CUDA out of memory\n"
    result = cli("endpoint", "logs", "chat")
    assert result.exit_code == 0, result.output
    assert result.stdout == "CUDA out of memory\n"
    assert "no live replica; the last one was job chat-r1-bbbbbb (failed, exit code 3)" in (
        result.stderr
    )
    api.jobs.clear()
    result = cli("endpoint", "logs", "chat")
    assert result.exit_code == 1
    assert (
        result.stderr
        == "error: endpoint chat has no replicas yet (starting: replicas keep failing)\n"
    )


# -- update, delete ----------------------------------------------------------------------


def test_update_with_flags_changes_the_current_spec_where_they_say(cli: Cli, api: FakeApi) -> None:
    api.add("chat")
    result = cli("endpoint", "update", "chat", "--max-replicas", "8", "--env", "A=2", "--detach")
    assert result.exit_code == 0, result.output
    method, path, body = api.sent[-1]
    assert (method, path) == ("PUT", "/v1/workspaces/default/endpoints/chat")
    sent = EndpointSpec.model_validate(body)
    assert sent.max_replicas == 8 and sent.env == {"A": "2"}
    assert sent.command == 'vllm serve m --port "${PORT}"' and sent.resources.memory == 16384
    assert "updated endpoint chat (revision 2, updating)" in result.stdout


def test_update_with_a_command_or_a_file(cli: Cli, api: FakeApi, tmp_path: Path) -> None:
    api.add("chat")
    result = cli("endpoint", "update", "chat", "--detach", "--", "sglang", "--port", "$PORT")
    assert result.exit_code == 0, result.output
    assert api.sent[-1][2]["command"] == 'sglang --port "${PORT}"'
    spec = tmp_path / "chat.yaml"
    spec.write_text("command: serve $PORT\nmin_replicas: 2\n")
    result = cli("endpoint", "update", "chat", str(spec), "--detach")
    assert result.exit_code == 0, result.output
    body = api.sent[-1][2]
    assert body["name"] == "chat" and body["min_replicas"] == 2 and "max_replicas" not in body
    spec.write_text("name: other\ncommand: serve $PORT\n")
    result = cli("endpoint", "update", "chat", str(spec), "--detach")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {spec} describes endpoint 'other', not 'chat'")


def test_update_of_nothing_or_of_no_such_endpoint(cli: Cli, api: FakeApi) -> None:
    result = cli("endpoint", "update", "chat")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: nothing to change")
    result = cli("endpoint", "update", "chat", "--max-replicas", "2")
    assert result.exit_code == 1
    assert "endpoint 'chat' in workspace 'default' not found" in result.stderr


def test_update_wait_waits_for_the_new_revision(cli: Cli, api: FakeApi) -> None:
    api.add("chat")
    api.script["chat"] = [("ready", 2, 2, None)]  # the GET for the current spec
    api.script["chat"] += [("updating", 2, 2, "rolling out revision 2: 1 of 2 ready")]
    api.script["chat"] += [("ready", 2, 2, None)]
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert [m for m, _, _ in api.sent] == ["GET", "PUT", "GET", "GET"]
    assert "endpoint chat is ready" in result.stderr


def test_update_wait_does_not_wait_for_old_replicas_to_drain(cli: Cli, api: FakeApi) -> None:
    api.add(
        "chat",
        replicas=[
            replica("chat-r1-aaaaaa", state="draining", revision=1),
            replica("chat-r2-bbbbbb", revision=2),
        ],
    )
    api.script["chat"] = [("ready", 1, 1, None), ("updating", 1, 1, "draining revision 1")]
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--wait")
    assert result.exit_code == 0, result.output
    assert [m for m, _, _ in api.sent] == ["GET", "PUT", "GET"]
    assert "is ready: 1 of 1 replicas at" in result.stderr
    assert "1 old replica draining" in result.stderr


def test_delete_says_it_drains(cli: Cli, api: FakeApi) -> None:
    api.add("chat", replicas=[replica("chat-r1-aaaaaa"), replica("chat-r1-bbbbbb")])
    result = cli("endpoint", "delete", "chat")
    assert result.exit_code == 0, result.output
    assert api.sent[-1][:2] == ("DELETE", "/v1/workspaces/default/endpoints/chat")
    assert result.stdout == (
        "deleting endpoint chat: its 2 replicas finish their open requests and stop, "
        "then it is gone\n"
    )


def test_workspace_flag_and_a_spec_workspace_select_the_path(cli: Cli, api: FakeApi) -> None:
    cli("endpoint", "ls", "-w", "research")
    cli("--workspace", "vision", "endpoint", "get", "x")
    paths = [r.url.path for r in api.requests]
    assert paths == ["/v1/workspaces/research/endpoints", "/v1/workspaces/vision/endpoints/x"]


# -- the SDK -----------------------------------------------------------------------------


def test_client_endpoint_calls(api: FakeApi) -> None:
    client = api.client(Settings("http://corral.test:7390", "t", "default"))
    view = client.deploy_endpoint(EndpointSpec(name="a", workspace="ml", command="s $PORT"))
    assert (view.name, view.workspace, view.state) == ("a", "ml", "starting")
    assert api.sent[-1][1] == "/v1/workspaces/ml/endpoints"
    assert [v.name for v in client.list_endpoints()] == ["a"]
    assert client.get_endpoint("a").path == "/ep/a/"
    updated = client.update_endpoint("a", EndpointSpec(command="s2 $PORT"))
    assert updated.revision == 2 and updated.spec.command == "s2 $PORT"
    assert client.delete_endpoint("a").state == "deleting"
    with pytest.raises(NotFound):
        client.get_endpoint("b")
    with pytest.raises(Exception, match="is being deleted"):
        client.wait_endpoint("a", timeout=5)


# -- serve, gateway ----------------------------------------------------------------------


def test_serve_of_a_missing_target_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    result = cli("serve", str(tmp_path / "nope.py") + ":App")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "no such file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_gateway_runs_with_the_configured_server_and_token(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.gateway

    calls: list[tuple[Any, ...]] = []

    def fake_run(port: int, server: str | None = None, **kw: Any) -> None:
        calls.append((port, server, kw))

    monkeypatch.setattr(corral.gateway, "run_gateway", fake_run)
    result = cli("gateway", "--port", "9090")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    port, server, kw = calls[0]
    assert (port, server) == (9090, "http://corral.test:7390")
    assert {k: kw[k] for k in ("host", "token", "gateway_id")} == {
        "host": "0.0.0.0",
        "token": "crl_good",
        "gateway_id": None,
    }
    assert api.sent[-1][1] == "/v1/whoami"

    api.whoami = {"token": "tok_2", "role": "member", "workspace": "ml"}
    result = cli("gateway")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: the gateway needs a cluster-admin token; this one is member of workspace ml"
    )
    assert len(calls) == 1


def test_gateway_without_a_token_says_where_to_get_one(cli: Cli, home: Path) -> None:
    (home / "config.json").write_text(json.dumps({"server": "http://corral.test:7390"}))
    result = cli("gateway")
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


# -- update waits; reasons shown ------------------------------------------------------------


def test_update_waits_by_default_and_a_stuck_rollout_exits_1_with_its_reason(
    cli: Cli, api: FakeApi
) -> None:
    api.add("chat")
    why = (
        "rolling out revision 2 by replacement: no node has room for a surge; waiting for 1 "
        "replica to stop; 0 of 1 ready"
    )
    api.script["chat"] = [("ready", 1, 1, None)] + [("updating", 0, 1, why)] * 1000
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--timeout", "90")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "error: endpoint 'chat' did not roll out revision 2 within 90 s (it is updating, 0 of 1 "
        f"replicas ready): {why}"
    ), result.stderr
    assert 90 <= api.now < 91


def test_update_detach_returns_at_once(cli: Cli, api: FakeApi) -> None:
    api.add("chat")
    result = cli("endpoint", "update", "chat", "--cpus", "2", "--detach")
    assert result.exit_code == 0, result.output
    assert [m for m, _, _ in api.sent] == ["GET", "PUT"]


def test_get_shows_each_replicas_reason_and_the_autoscaler_apart(cli: Cli, api: FakeApi) -> None:
    pending = "needs 1× (2 CPUs) in one node; no node has room now"
    api.add(
        "chat",
        state="updating",
        revision=2,
        reason=f"rolling out revision 2: 0 of 1 ready; 1 replica waiting for a node: {pending}",
        autoscaler="0.0 in flight over 60 s, target 8 per replica",
        replicas=[
            replica("chat-r1-aaaaaa", node="gpu-a", revision=1),
            replica("chat-r2-bbbbbb", state="starting", node=None, revision=2, reason=pending),
        ],
    )
    result = cli("endpoint", "get", "chat")
    assert result.exit_code == 0, result.output
    second = next(line for line in result.stdout.splitlines() if line.startswith("chat-r2"))
    assert re.split(r"\s{2,}", second.strip())[-1] == pending
    autoscaler = next(line for line in result.stdout.splitlines() if "autoscaler" in line)
    assert "0.0 in flight over 60 s" in autoscaler


def test_the_empty_ls_hint_deploys_something_that_becomes_ready(cli: Cli) -> None:
    result = cli("endpoint", "ls")
    hint = result.stderr.split("deploy one: ", 1)[1].strip()
    assert hint == (
        "corral endpoint deploy hello --readiness-path / --wait -- python3 -m http.server '$PORT'"
    )


def test_delete_of_one_replica_reads_in_the_singular(cli: Cli, api: FakeApi) -> None:
    api.add("solo", replicas=[replica("solo-r1-aaaaaa")])
    result = cli("endpoint", "delete", "solo")
    assert result.exit_code == 0, result.output
    assert "its replica finishes its open requests and stops" in result.stdout
