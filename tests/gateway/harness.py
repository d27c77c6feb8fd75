"""Real processes for gateway tests: mock model servers, the gateway, a fake control plane.

The fake control plane is the one piece in the test process: a threaded stdlib HTTP server
speaking the real wire contract (`GET /v1/gateway/routes` with long polling, `POST
/v1/gateway/wake`), so the gateway under test runs exactly as in production:
`python -m corral.gateway --server URL`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from corral.wire.gateway import EndpointRoute, GatewayLoad, ReplicaRoute, RouteTable, Wake
from support.cluster import free_port, wait_for

MOCK = Path(__file__).resolve().parent.parent / "support" / "mock_openai.py"
SRC = Path(__file__).resolve().parents[2] / "src"
# The gateway's control-plane token in tests; it also opens /_corral/load and /metrics.
GATEWAY_TOKEN = "crl_gateway-test-admin"
ADMIN_HEADERS = {"authorization": f"Bearer {GATEWAY_TOKEN}"}


def token_file(tmp: Path, token: str = GATEWAY_TOKEN, name: str = "gateway-token") -> Path:
    """A token file as `corral up` writes one: owner-only."""
    path = tmp / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def process_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


class MockReplica:
    """One mock OpenAI server process."""

    def __init__(self, tmp: Path, replica_id: str, *args: str) -> None:
        self.id = replica_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.events_path = tmp / f"{replica_id}.events.jsonl"
        self.log = tmp / f"{replica_id}.log"
        self.started_at = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(MOCK),
                    "--port",
                    str(self.port),
                    "--replica-id",
                    replica_id,
                    "--events",
                    str(self.events_path),
                    *args,
                ],
                env=process_env(),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 20.0) -> MockReplica:
        wait_for(f"mock replica {self.id} ready", self.ready, timeout=timeout, interval=0.02)
        return self

    def route(self, state: str = "ready") -> ReplicaRoute:
        return ReplicaRoute(id=self.id, url=self.url, state=state)  # type: ignore[arg-type]

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def ids(self, kind: str) -> set[str]:
        return {e["id"] for e in self.events() if e["event"] == kind}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A gateway stopped mid long-poll leaves a broken pipe here; that is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FakeControlPlane:
    """Serves route tables to gateways and collects their wake-ups."""

    def __init__(self, on_wake: Callable[[Wake], None] | None = None, domain: str | None = None):
        self.domain = domain
        self.on_wake = on_wake
        self.wakes: list[tuple[float, Wake]] = []
        self.reports: list[GatewayLoad] = []
        self.authorizations: set[str] = set()
        self._cond = threading.Condition()
        self._table = RouteTable(version=1, domain=domain, endpoints=[])
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                plane.authorizations.add(self.headers.get("authorization", ""))
                url = urlsplit(self.path)
                if url.path == "/v1/whoami":  # what `corral gateway` checks its token with
                    token = self.headers.get("authorization", "")[7:]
                    who = {"token": token[:8], "role": "admin", "workspace": None}
                    self._send(200, json.dumps(who).encode())
                    return
                if url.path != "/v1/gateway/routes":
                    self._send(404, b"{}")
                    return
                query = parse_qs(url.query)
                after = int(query["after"][0]) if "after" in query else None
                wait = float(query.get("wait", ["0"])[0])
                body = plane._wait_table(after, min(wait, 5.0)).model_dump_json().encode()
                self._send(200, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if self.path == "/v1/gateway/load":
                    plane.reports.append(GatewayLoad.model_validate_json(body))
                    self._send(200, b"{}")
                    return
                wake = Wake.model_validate_json(body)
                plane.wakes.append((time.monotonic(), wake))
                self._send(200, b"{}")
                if plane.on_wake is not None:
                    threading.Thread(target=plane.on_wake, args=(wake,), daemon=True).start()

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _wait_table(self, after: int | None, wait: float) -> RouteTable:
        deadline = time.monotonic() + wait
        with self._cond:
            while after is not None and self._table.version == after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._table

    def set(self, *endpoints: EndpointRoute) -> int:
        with self._cond:
            version = self._table.version + 1
            self._table = RouteTable(version=version, domain=self.domain, endpoints=list(endpoints))
            self._cond.notify_all()
            return version

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()


class GatewayProc:
    """`python -m corral.gateway` following a control plane (or another gateway `argv`)."""

    def __init__(
        self,
        tmp: Path,
        server: str,
        *extra: str,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "gateway.log"
        if argv is None:
            argv = [sys.executable, "-m", "corral.gateway", "--token-file", str(token_file(tmp))]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *argv,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--server",
                    server,
                    "--id",
                    "test-gateway",
                    *extra,
                ],
                env=env or process_env(),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for("gateway up", self._healthy)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited ({self.proc.returncode}):\n{self.output()}")
        return self.get("/_corral/healthz").status_code == 200

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET from the gateway, with the admin token unless `headers` says otherwise."""
        return httpx.get(
            self.url + path, headers=ADMIN_HEADERS if headers is None else headers, timeout=5.0
        )

    def load(self, window: float = 1.0) -> dict[str, Any]:
        data: dict[str, Any] = self.get(f"/_corral/load?window={window}").json()
        return data

    def endpoint_load(self, name: str, window: float = 1.0) -> dict[str, Any]:
        for endpoint in self.load(window)["endpoints"]:
            if endpoint["name"] == name:
                return dict(endpoint)
        raise AssertionError(f"gateway reports no endpoint {name}")

    def wait_version(self, version: int) -> None:
        wait_for(
            f"gateway at route version {version}",
            lambda: self.load()["route_version"] >= version,
            interval=0.01,
        )

    def metric(self, name: str, endpoint: str) -> float:
        total = 0.0
        for line in self.get("/_corral/metrics").text.splitlines():
            if line.startswith(name) and f'endpoint="{endpoint}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def endpoint(name: str, *replicas: ReplicaRoute, **options: Any) -> EndpointRoute:
    return EndpointRoute(name=name, workspace="default", replicas=list(replicas), **options)


def sse_events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


class EchoReplica:
    """A replica in the test process that answers each request with the head it received."""

    def __init__(self, replica_id: str = "echo-1") -> None:
        self.id = replica_id
        self.heads: list[list[tuple[str, str]]] = []
        # Every connection the gateway opened, answered or not: "nothing reached the
        # replica" must not pass because the replica refused something itself.
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                replica.connections += 1
                super().setup()

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                head = list(self.headers.items())
                replica.heads.append(head)
                body = json.dumps({"path": self.path, "headers": head}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        replica = self
        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def route(self) -> ReplicaRoute:
        return ReplicaRoute(id=self.id, url=self.url, state="ready")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def echo_stack(tmp: Path, *extra: str) -> Iterator[tuple[GatewayProc, EchoReplica]]:
    """A gateway process (with `extra` options) routing public endpoint `echo` to an
    EchoReplica; everything stopped on exit."""
    plane = FakeControlPlane()
    replica = EchoReplica()
    gateway: GatewayProc | None = None
    try:
        gateway = GatewayProc(tmp, plane.url, *extra)
        gateway.wait_version(plane.set(endpoint("echo", replica.route(), auth="public")))
        yield gateway, replica
    finally:
        if gateway is not None:
            gateway.stop()
        replica.close()
        plane.close()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the gateway; what it answers until it closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def status_of(response: bytes) -> int:
    """The status code of the first response in raw bytes (0: none)."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])
