"""Issue 10's endpoint, end to end: a process that is not corral's takes a serving replica's
port before the replica listens. Its answers never make the replica ready and the gateway
never routes to it; the replica says who holds its port; its EADDRINUSE exit is the
infrastructure's failure, and the endpoint serves from another port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from test_endpoints import Fleet, fleet, mock_command  # noqa: F401 (the fixture)

from corral.agent import ports
from support.cluster import wait_for

# Another program on the node: once `claim` holds a port number, it listens there on every
# address and answers every GET with 200 "foreign", as `python -m http.server` would.
FOREIGN = """\
import http.server, pathlib, sys, time
claim = pathlib.Path(sys.argv[1])
while not claim.exists() or not claim.read_text().strip():
    time.sleep(0.02)

class Any(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"foreign")

    do_POST = do_GET

    def log_message(self, *args):
        pass

http.server.HTTPServer(("0.0.0.0", int(claim.read_text())), Any).serve_forever()
"""


@contextlib.contextmanager
def foreign(claim: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", FOREIGN, str(claim)], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def replica(view: dict[str, Any]) -> dict[str, Any] | None:
    replicas = view["replicas"]
    return replicas[0] if len(replicas) == 1 else None


def port_of(view: dict[str, Any]) -> int | None:
    r = replica(view)
    return urlsplit(r["url"]).port if r and r.get("url") else None


def test_a_stranger_on_a_replicas_port_is_named_never_routed_to_and_not_the_users_fault(
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
) -> None:
    gate, claim = tmp_path / "gate", tmp_path / "claim"
    with foreign(claim) as stranger:  # running before the replica starts, not yet listening
        # The replica starts its server once the test says so (after the stranger listens).
        command = f"while [ ! -e {gate} ]; do sleep 0.05; done; exec " + mock_command()
        fleet.deploy(
            {
                "name": "web",
                "command": command,
                "min_replicas": 1,
                "max_replicas": 1,
                "auth": "public",
                "resources": {"cpus": 0.1, "memory": "64Mi"},
            }
        )
        fleet.routed("web")
        first = wait_for("the replica's port", lambda: port_of(fleet.get("web")))
        claim.write_text(str(first))
        wait_for("the stranger listening", lambda: ports.on_port(first))
        # Said, without naming it: the stranger may be another workspace's process.
        held = f"port {first} is held by another process, not this replica"
        shown = wait_for(
            "the replica to name the stranger",
            lambda: (r := replica(fleet.get("web"))) and held in (r.get("reason") or "") and r,
        )
        assert shown["state"] != "ready", shown
        assert fleet.get("web")["ready_replicas"] == 0

        gate.touch()  # the server starts: EADDRINUSE on its port, exit 1
        wait_for(
            "the endpoint ready again, elsewhere",
            lambda: (v := fleet.get("web"))["ready_replicas"] == 1 and port_of(v) != first,
            timeout=60,
        )
        answer = fleet.chat("web")
        assert answer.status_code == 200 and answer.json()["choices"], answer.text
        assert stranger.poll() is None, "the stranger still holds its port"
    with fleet.cluster.client() as client:
        replica_job = client.get_job(replica(fleet.get("web"))["job"])  # type: ignore[index]
    one = replica_job.attempts[0]
    assert one.end_cause == "port_in_use", replica_job.attempts
    assert replica_job.restarts == 0
