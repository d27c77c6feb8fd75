"""Whether this agent confines its replicas, and each replica's sandbox.json from its
assignment. Runs in the agent (root on a real node)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import corral
from corral.agent.layout import STATUS, TMP, WORK
from corral.agent.sandbox.config import SandboxConfig
from corral.agent.sandbox.modes import DEFAULT_UID_BASE, IsolationMode
from corral.agent.sandbox.plan import workload_uid
from corral.wire.agent import ReplicaAssignment

log = logging.getLogger("corral.agent.sandbox")

NOT_ISOLATED = (
    "workloads are NOT isolated from each other or from this agent: they run as {user}, "
    "see each other's processes and files, and can read what this user can. {why} Run the "
    "agent as root for per-workspace users and namespaces (see src/corral/agent/sandbox)."
)


class IsolationUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Isolation:
    """How this node confines replicas: each workspace's own uid, namespaces, private dirs."""

    state_dir: Path
    uid_base: int = DEFAULT_UID_BASE

    def expose(self) -> list[str]:
        """What every replica must reach: the Python that runs corral (a job's `python3`
        and `import corral.train`), wherever it is installed."""
        package_root = Path(corral.__file__).resolve().parent.parent
        paths = {
            sys.prefix,
            sys.base_prefix,
            str(Path(sys.executable).resolve().parent.parent),
            str(package_root),
        }
        return sorted(p for p in paths if p not in ("/", "/usr", "/usr/local"))

    def config_for(self, assignment: ReplicaAssignment, replica_dir: Path) -> SandboxConfig:
        if assignment.uid_index is None:
            raise IsolationUnavailable(
                "the server sent no workspace uid for this replica (a server older than "
                "this agent): it cannot be confined"
            )
        uid = workload_uid(self.uid_base, assignment.uid_index)
        return SandboxConfig(
            uid=uid,
            gid=uid,
            user=f"corral-{assignment.workspace}",
            home=str(self.state_dir / "homes" / str(uid)),
            work=str(replica_dir / WORK),
            status=str(replica_dir / STATUS),
            tmp=str(replica_dir / TMP),
            checkpoint_dir=_local_path(assignment.env.get("CORRAL_CHECKPOINT_DIR")),
            workspace_checkpoints=assignment.workspace_checkpoints,
            expose=self.expose(),
            host_paths=list(assignment.host_paths),
        )

    @staticmethod
    def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
        """What a confined replica's shim, init and workload get from the agent's own
        environment: only what is meant for every workload of the node (see KEPT), never
        the operator's credentials (HF_TOKEN, AWS_*, proxies), and never a variable that
        would change what the root init loads (PYTHON*, LD_*). PATH starts with corral's
        own interpreter: a confined replica cannot reach shims in a home it may not enter
        (pyenv's, say), and `python3` should have corral."""
        env = {k: v for k, v in environ.items() if kept(k)}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bin_dir}{os.pathsep}{environ.get('PATH', '/usr/bin:/bin')}"
        return env


# Locale, time zone, unbuffered output, and the collective libraries' network settings an
# operator tunes per node (NCCL_IB_HCA, NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, UCX_*, FI_*).
KEPT = ("LANG", "LANGUAGE", "TZ", "PYTHONUNBUFFERED")
KEPT_PREFIXES = ("LC_", "NCCL_", "GLOO_", "UCX_", "FI_")


def kept(name: str) -> bool:
    return name in KEPT or name.startswith(KEPT_PREFIXES)


def resolve(mode: IsolationMode, state_dir: Path, uid_base: int) -> tuple[Isolation | None, str]:
    """The isolation this agent will use, and a line to log about it. Raises
    IsolationUnavailable when `user` was asked for and cannot be had."""
    if mode is IsolationMode.NONE:
        why = "Isolation is off (--isolation none)."
        return None, NOT_ISOLATED.format(user=_me(), why=why)
    problem = _why_not(state_dir)
    if problem is None:
        note = (
            f"replicas run confined: each workspace as its own uid from {uid_base + 1}, "
            "in PID and mount namespaces of their own"
        )
        return Isolation(state_dir=state_dir, uid_base=uid_base), note
    if mode is IsolationMode.USER:
        raise IsolationUnavailable(f"--isolation user: {problem}")
    return None, NOT_ISOLATED.format(user=_me(), why=problem)


def _me() -> str:
    return f"uid {os.geteuid()}"


def _why_not(state_dir: Path) -> str | None:
    if os.geteuid() != 0:
        return "The agent is not root."
    # Asked of the kernel, not assumed: containers often forbid new namespaces.
    probe = (
        "from corral.agent.sandbox import linux; "
        "linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"This kernel or container refuses new namespaces ({detail})."
    return None


def _local_path(checkpoint_dir: str | None) -> str | None:
    """The directory to create for the replica, if its checkpoints are on a filesystem; an
    object-store URI is the workload's own business."""
    if checkpoint_dir is None:
        return None
    path = checkpoint_dir.removeprefix("file://")
    return path if path.startswith("/") else None
