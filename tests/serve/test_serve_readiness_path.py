"""An `app:` endpoint answers readiness where the node probes it: the spec's path.

The spec's `readiness.path` is what the agent probes; `python -m corral.serve` once always
answered on the class's path (default /health), so `--readiness-path /ready` never became
ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from corral.spec.endpoint import EndpointSpec
from support.cluster import free_port, wait_for

APP = """
from corral.serve import handler

class Hello:
    @handler("/hi")
    def hi(self) -> dict:
        return {"hi": True}
"""


def test_the_spec_readiness_path_is_passed_to_the_app() -> None:
    spec = EndpointSpec.model_validate({"app": "app.py:Hello", "readiness": {"path": "/ready"}})
    assert "--readiness-path /ready" in spec.argv()[-1]


def test_serve_answers_readiness_on_the_path_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    argv = ["app.py:Hello", "--port", str(port), "--readiness-path", "/ready"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.serve", *argv],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the app ready on /ready", lambda: proc.poll() is None and ready(), timeout=30)
        assert httpx.get(f"{url}/health").status_code == 404
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
