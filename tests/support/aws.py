"""AWS's boundaries for tests: moto's EC2 server on loopback (the real boto3 path reaches
it over HTTP), and a fake instance metadata service (IMDSv2) that can announce a spot
interruption — the one thing of EC2 nothing here can reach."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
IMDS_TOKEN = "imds-session-token"


@contextmanager
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server on loopback, reset; credentials from the standard chain (this
    process's environment). Yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto's state is per process, not per server: start from none.
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    try:
        yield url
    finally:
        server.stop()


class FakeImds:
    """IMDSv2 as EC2 serves it: PUT /latest/api/token, then reads with that token (401
    without). spot/instance-action is 404 until `notice` is set. Counts what it saw."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.notice: dict[str, str] | None = None
        self.token_puts = 0
        self.reads = 0
        self.unauthorized = 0
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != "/latest/api/token" or not ttl:
                    self._answer(400)
                    return
                imds.token_puts += 1
                self._answer(200, IMDS_TOKEN.encode())

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
                    imds.unauthorized += 1
                    self._answer(401)
                    return
                if self.path != "/latest/meta-data/spot/instance-action":
                    self._answer(404)
                    return
                imds.reads += 1
                if imds.notice is None:
                    self._answer(404)
                else:
                    self._answer(200, json.dumps(imds.notice).encode())

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeImds:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def clean_env() -> dict[str, str]:
    """The environment cloud-init runs user data with: root's PATH and nothing of ours."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
