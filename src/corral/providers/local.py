"""The `local` provider: nodes that are `corral agent` processes on this machine.

Each instance is one agent with fake GPUs of its type's shape (catalog `providers.local`),
its own directory (`<root>/<node name>/`: the 0600 join-token file, the agent's state, its
log and pid) and the labels its JoinInfo gives. It makes the whole supply path real without
a cloud: a pool on `local` grows by starting agents that join with a one-use token, and
shrinks by stopping them. Agents here run unconfined (`--isolation none`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corral.providers.base import (
    Instance,
    InstanceState,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)
from corral.providers.catalog import Catalog

STOP_WAIT_S = 10.0  # SIGTERM, then this long before SIGKILL
PREFIX = "local:"


class LocalProvider:
    name = "local"
    static = False

    def __init__(self, root: Path, catalog: Catalog, python: str | None = None) -> None:
        self.root = root
        self.catalog = catalog
        self.python = python or sys.executable

    def launch(self, request: LaunchRequest) -> list[Instance]:
        shape = self.catalog.shape("local", request.instance_type)
        if shape is None:
            known = ", ".join(sorted(self.catalog.shapes.get("local", {}))) or "none"
            raise ProviderError(
                LaunchErrorKind.INVALID,
                f"local: no instance type {request.instance_type!r} in the catalog "
                f"(known: {known})",
            )
        started: list[Instance] = []
        try:
            for join in request.joins:
                started.append(self._start(request, join.node_name, join))
        except OSError as exc:
            self.terminate([i.provider_id for i in started])
            raise ProviderError(
                LaunchErrorKind.INVALID, f"local: could not start an agent: {exc}"
            ) from exc
        return started

    def _start(self, request: LaunchRequest, name: str, join: object) -> Instance:
        from corral.providers.base import JoinInfo

        assert isinstance(join, JoinInfo)
        shape = self.catalog.shape("local", request.instance_type)
        assert shape is not None
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = home / "join-token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(join.join_token + "\n")
        argv = [
            self.python,
            "-m",
            "corral.cli.main",
            "agent",
            "--server",
            join.server_url,
            "--name",
            name,
            "--state-dir",
            str(home / "state"),
            "--isolation",
            "none",
            "--fake-gpus",
            f"{shape.gpu_model}:{shape.gpus}" if shape.gpus else "none",
        ]
        for key, value in sorted(join.labels.items()):
            argv += ["--label", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["CORRAL_JOIN_TOKEN_FILE"] = str(token)
        env["CORRAL_HOME"] = str(home)
        with (home / "agent.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: terminate stops all it started
            )
        meta = {
            "pid": proc.pid,
            "pool": request.pool,
            "instance_type": request.instance_type,
            "region": request.region,
            "spot": request.spot,
        }
        (home / "instance.json").write_text(json.dumps(meta))
        return Instance(
            provider_id=PREFIX + name,
            node_name=name,
            pool=request.pool,
            state=InstanceState.RUNNING,
            instance_type=request.instance_type,
            region=request.region,
            spot=request.spot,
            address="127.0.0.1",
        )

    def list(self, pool: str | None = None) -> list[Instance]:
        found: list[Instance] = []
        if not self.root.is_dir():
            return found
        for home in sorted(self.root.iterdir()):
            meta = _meta(home)
            if meta is None or (pool is not None and meta.get("pool") != pool):
                continue
            alive = _alive(int(meta.get("pid", 0)))
            found.append(
                Instance(
                    provider_id=PREFIX + home.name,
                    node_name=home.name,
                    pool=str(meta.get("pool", "")),
                    state=InstanceState.RUNNING if alive else InstanceState.TERMINATED,
                    instance_type=str(meta.get("instance_type", "")),
                    region=str(meta.get("region", "")),
                    spot=bool(meta.get("spot", False)),
                    address="127.0.0.1",
                )
            )
        return found

    def terminate(self, provider_ids: Sequence[str]) -> None:
        for provider_id in provider_ids:
            name = provider_id.removeprefix(PREFIX)
            if not name or "/" in name or name.startswith("."):
                continue
            home = self.root / name
            meta = _meta(home)
            if meta is not None:
                _stop_group(int(meta.get("pid", 0)))
            _stop_leftovers(home / "state")
            shutil.rmtree(home, ignore_errors=True)


def _meta(home: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((home / "instance.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _alive(pid: int) -> bool:
    if pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child not yet reaped) is not alive.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _stop_group(pid: int) -> None:
    if pid <= 1:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _stop_leftovers(state: Path) -> None:
    """What an agent leaves running on purpose (its lifeline, replicas' shims): on a
    released local node nothing may stay."""
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int(json.loads((state / "lifeline.json").read_text()).get("pid", 0)))
    for shim in state.glob("replicas/*/shim.json"):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(shim.read_text())
            for key in ("pgid", "workload_pgid"):
                pgid = info.get(key)
                if isinstance(pgid, int) and pgid > 1:
                    with contextlib.suppress(OSError):
                        os.killpg(pgid, signal.SIGKILL)
            for key in ("shim_pid", "pid"):
                pid = info.get(key)
                if isinstance(pid, int) and pid > 1:
                    pids.append(pid)
    for pid in pids:
        if pid > 1:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
