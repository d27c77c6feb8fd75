"""The `local` provider: nodes that are `corral agent` processes on this machine.

Each instance is one agent with fake GPUs of its type's shape (catalog `providers.local`),
its own directory (`<root>/<node name>/`: the 0600 join-token file, the agent's state, its
log and pid) and the labels its JoinInfo gives. It makes the whole supply path real without
a cloud: a pool on `local` grows by starting agents that join with a one-use token, and
shrinks by stopping them. Agents here run unconfined (`--isolation none`), as the server's
user: a server takes local pools only when started to allow them (a one-machine dev
cluster; server/config.py allow_local_pools). They start with a minimal environment (no
credentials of the server's) and a marker variable that every process they start inherits:
stopping a node kills only processes carrying its marker, never a pid read from a file
its workload could write.
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
from collections.abc import Mapping, Sequence
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
# Not CORRAL_*: the agent keeps those from its replicas, and the marker must reach them.
MARKER_ENV = "LOCAL_CORRAL_NODE"
# What an agent here inherits of the server's environment: where programs are, the locale.
# Not the rest: the server's may hold cloud credentials, database URLs, tokens.
PASSED_ENV = (
    "PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH"
)  # fmt: skip


class LocalProvider:
    name = "local"
    static = False

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        python: str | None = None,
        *,
        launch_allowed: bool = True,
    ) -> None:
        self.root = root
        self.catalog = catalog
        self.python = python or sys.executable
        # A server not allowed local pools (any more) still lists and stops what it started.
        self.launch_allowed = launch_allowed

    def launch(self, request: LaunchRequest) -> list[Instance]:
        if not self.launch_allowed:
            raise ProviderError(
                LaunchErrorKind.INVALID,
                "local: local pools are off on this server (their agents run unconfined "
                "as the server's user); CORRAL_ALLOW_LOCAL_POOLS=1 allows them on a "
                "one-machine cluster (corral up sets it)",
            )
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
        env = agent_environment(os.environ, home)
        env["CORRAL_JOIN_TOKEN_FILE"] = str(token)
        with (home / "agent.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=home,
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
            marker = _marker(home)
            if meta is not None:
                _stop_group(int(meta.get("pid", 0)), marker)
            _stop_leftovers(marker)
            shutil.rmtree(home, ignore_errors=True)


def agent_environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """A local agent's environment: the few harmless variables of `base`, its own home
    and the node's marker."""
    env = {k: base[k] for k in PASSED_ENV if k in base}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"HOME": str(home), "CORRAL_HOME": str(home), MARKER_ENV: _marker(home)})
    return env


def _marker(home: Path) -> str:
    # From the server's own path for the node, never from a file the node could write.
    return str(home.absolute())


def _carries(pid: int, marker: str) -> bool:
    """Whether process `pid` was started (at any depth) by the local agent of `marker`,
    as its inherited environment says; a process of anyone else's cannot say so."""
    if pid <= 1:
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0")


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


def _stop_group(pid: int, marker: str) -> None:
    """The agent and the group it leads, asked to stop, then killed; each signal only while
    `pid` is still that agent (instance.json, where the pid is read, is writable by the
    node's workload)."""
    if not _carries(pid, marker):
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _carries(pid, marker):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _stop_leftovers(marker: str) -> None:
    """What an agent leaves running on purpose (its lifeline, replicas' shims and their
    workloads, each in a session of its own): on a released local node nothing may stay.
    Found by the marker they inherited, not by pids in the state files (the workload
    runs as the server's user and could write any pid there)."""
    for _ in range(3):  # a process may fork while we look: look again
        found = [pid for pid in _pids() if pid != os.getpid() and _carries(pid, marker)]
        if not found:
            return
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in found:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def _pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]
