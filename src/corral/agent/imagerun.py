"""A replica with `image:` runs in a container of the node's runtime (runtimes.py), started by
its shim in place of the sandbox's init: the container is its confinement (no capabilities,
no new privileges, the workspace's uid), and sees the replica's working directory, status
directory, home and volumes at the paths a sandboxed replica sees them. Standard library
only: the shim imports it.

The environment goes in a 0600 file in the replica's directory, never on the command line.
`files:` are written by the shim as the workspace's user (no init runs to write them).
The runtime's client is the workload: the agent's TERM to its group reaches it and the
client passes it on to the container (its default sig-proxy); once the client is gone the
shim stops the container by name, so a KILL does not leave it running.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent import runtimes
from corral.agent.layout import progress_path
from corral.agent.sandbox.config import SandboxConfig
from corral.agent.volumes import Plan

ENV_FILE = "container.env"
STOP_TIMEOUT_S = 30.0


class NoRuntime(Exception):
    """The node cannot run images (the scheduler should not have placed it here)."""


@dataclass(frozen=True)
class Container:
    runtime: runtimes.RuntimeName
    name: str
    argv: list[str]

    def stop(self) -> None:
        """Make sure the container is gone (a no-op when it ended with its client)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                runtimes.stop_argv(self.runtime, self.name, grace_s=0),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=STOP_TIMEOUT_S,
                check=False,
            )


def container(
    replica_dir: Path,
    assignment: dict[str, Any],
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    sandbox: SandboxConfig | None,
    plan: Plan | None,
) -> Container:
    """The container command of the replica. `env` is the workload's environment as the
    image should see it. Raises NoRuntime, or ValueError for what the runtime cannot take."""
    found = runtimes.detect()
    if not found:
        raise NoRuntime(
            "this node has no container runtime that answers (docker or podman): the replica "
            "of an image was not started here"
        )
    gpus = _gpus(env.get("CUDA_VISIBLE_DEVICES", ""))
    # The scheduler placed a GPU replica here because some runtime passes GPUs through.
    runtime = next((r for r in found if r.gpus), found[0]) if gpus else found[0]
    status = progress_path(replica_dir).parent
    mounts = [(str(cwd), str(cwd)), (str(status), str(status))]
    if sandbox is not None:
        mounts.append((sandbox.home, sandbox.home))
    checkpoints = assignment.get("workspace_checkpoints")
    if checkpoints and Path(checkpoints).is_dir():
        mounts.append((checkpoints, checkpoints))
    if plan is not None:
        mounts += [(m.host, m.path) for m in plan.mounts]
    name = "corral-" + assignment["replica_id"][:120]
    cmd = runtimes.container_argv(
        runtime,
        str(assignment["image"]),
        argv,
        env=env,
        env_file=replica_dir / ENV_FILE,
        cwd=str(cwd),
        mounts=mounts,
        gpus=gpus,
        uid=sandbox.uid if sandbox is not None else None,
        gid=sandbox.gid if sandbox is not None else None,
        name=name,
        shm_mb=1024,
    )
    return Container(runtime.name, name, cmd)


def _gpus(visible: str) -> list[int]:
    return [int(g) for g in visible.split(",") if g.strip().isdigit()]
