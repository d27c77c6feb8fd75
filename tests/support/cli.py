"""The CLI against the real control plane in-process: `build_app(CliDeps(client_factory=...))`
with each command's SDK client sending its requests through `AppTransport` to the app.

Nothing is faked but the network: the settings the CLI resolved (server, token, workspace and
where each came from) reach a real `Client`, and the answers are the server's own. Registered
as a plugin by tests/conftest.py, so every test can ask for `server` and `cli`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm.exc import StaleDataError
from typer.testing import CliRunner, Result

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.client import Client, Settings
from corral.server.store.tables import Job, LogChunk, Node, Replica
from support.app import ADMIN_TOKEN, AppTransport, in_process
from support.store import register_node

_UNSET: Mapping[str, str | None] = {
    "CORRAL_SERVER": None,
    "CORRAL_TOKEN": None,
    "CORRAL_WORKSPACE": None,
    "NO_COLOR": "1",
    "COLUMNS": "200",
}


class Cli:
    """`cli("job", "ls")` runs `corral job ls` against `server`, as the cluster admin unless
    `token=` says otherwise; `env=` adds to (or unsets, with None) the environment. The
    clients' `transport` is the app's (a test may wrap it to watch the requests).

    With `virtual_time`, the clients' clock moves only by their own sleeps (`now`), so a
    command that waits (`--wait --timeout 90`) runs its whole wait at once; `on_sleep`, if
    set, runs at each of those sleeps (the world changing while the command waits)."""

    def __init__(self, server: TestClient, home: Path, *, virtual_time: bool = False) -> None:
        self.server = server
        self.home = home
        self.virtual_time = virtual_time
        self.transport: httpx.BaseTransport = AppTransport(server)
        self.now = 0.0
        self.on_sleep: Callable[[], None] | None = None

    def client(self, settings: Settings) -> Client:
        client = Client(
            settings.server,
            settings.token,
            settings.workspace,
            transport=self.transport,
            origin=settings.origin,
        )
        if self.virtual_time:
            client._clock = lambda: self.now
            client._sleep = self._sleep
        return client

    def _sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()

    def sdk(self, workspace: str = "default", token: str = ADMIN_TOKEN) -> Client:
        """The SDK as the CLI builds it, for a test's own calls."""
        return self.client(Settings("http://testserver", token, workspace))

    def __call__(
        self,
        *args: str,
        token: str | None = ADMIN_TOKEN,
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        app = build_app(CliDeps(client_factory=self.client, home=self.home))
        environ = {**_UNSET, "CORRAL_TOKEN": token, **(env or {})}
        return CliRunner().invoke(app, list(args), env=environ)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    """The control plane in-process on SQLite, its lifespan (controllers) running."""
    with in_process(f"sqlite:///{tmp_path / 'corral.db'}", tmp_path / "server") as client:
        yield client


@pytest.fixture
def cli(server: TestClient, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(server, home)


JOBS = "/v1/workspaces/default/jobs"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# More GPUs than any node here has: the job stays pending, and the scheduler says why.
UNPLACEABLE = {"resources": {"gpus": "H100:64"}}


def submit_job(server: TestClient, name: str, workspace: str = "default", **spec: Any) -> None:
    """Submit job `name` (`command: true` unless `spec` says otherwise) over the API."""
    body = {"name": name, "command": "true", **spec}
    r = server.post(f"/v1/workspaces/{workspace}/jobs", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


def scheduled_reason(cli: Cli, name: str, workspace: str = "default") -> str:
    """Why job `name` is pending, once the scheduler has looked at it (a deadline of 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        reason = cli.sdk(workspace).get_job(name).reason or ""
        if reason and reason != "waiting for the scheduler":
            return reason
        assert time.monotonic() < deadline, f"the scheduler did not look at job {name}"
        time.sleep(0.02)


def finish_job(
    server: TestClient,
    name: str,
    logs: dict[int, list[str]],
    *,
    state: str = "succeeded",
    exit_code: int = 0,
    reason: str | None = None,
    nodes: list[str] | None = None,
) -> None:
    """Make job `name` one that ran and ended: replica `rank` on node `nodes[rank]` (default
    one node for all), its log in the chunks `logs[rank]`, as agents would have reported."""
    store = server.app.state.cp.store  # type: ignore[attr-defined]
    names = nodes or [f"node-{name}"] * len(logs)
    node_ids = {n: register_node(store, n, gpus=0) for n in dict.fromkeys(names)}
    # Heard from now by the server's clock: registered at t=2 s, the live liveness
    # controller would find them silent since 1970 and end a "running" job's attempt once
    # the server has been up longer than its grace (a slow machine's CI run did).
    now = server.app.state.cp.clock.now()  # type: ignore[attr-defined]
    with store.transaction() as session:
        for node_id in node_ids.values():
            session.execute(update(Node).where(Node.id == node_id).values(last_heartbeat_at=now))
    for _ in range(20):  # the scheduler may touch the pending job meanwhile: read it again
        try:
            with store.transaction() as session:
                job = session.scalars(select(Job).where(Job.name == name)).one()
                job.state, job.attempt, job.exit_code = state, 1, exit_code
                job.reason = reason
                job.started_at = job.finished_at = job.submitted_at
                for rank, chunks in logs.items():
                    size = sum(len(c.encode()) for c in chunks)
                    replica = Replica(
                        id=f"{name}-{rank}",
                        job_id=job.id,
                        attempt=1,
                        rank=rank,
                        node_id=node_ids[names[rank]],
                        gpus=[],
                        cpus=1,
                        memory_mb=1,
                        disk_mb=0,
                        state=state,
                        desired="run",
                        exit_code=exit_code,
                        created_at=job.submitted_at,
                        received_bytes=size,
                        log_bytes=size,
                    )
                    session.add(replica)
                    session.flush()  # the chunks refer to it
                    offset = 0
                    for chunk in chunks:
                        n = len(chunk.encode())
                        session.add(
                            LogChunk(replica_id=replica.id, offset=offset, nbytes=n, data=chunk)
                        )
                        offset += n
            return
        except StaleDataError:
            continue
    raise AssertionError("could not update the job")
