"""Container runtimes on this node (docker, podman) and the command that runs a replica in one.

Two pieces, one small interface:

- `detect(timeout_s)` asks the host which runtimes *answer*: `docker info` / `podman info`
  must reach an engine and report a version within the deadline. A docker CLI with no
  daemon behind it (this machine's) is not a runtime: an image job placed there could
  never start. Both are asked at once; a hung client is killed with its whole process
  group (a child holding the pipe would otherwise keep `communicate` waiting).
- `container_argv(...)` builds `<runtime> run ...` for one replica. It is pure apart from
  writing the environment file: values never go on the command line, which every local
  user can read in /proc/<pid>/cmdline.

Standard library only at import time: the shim (agent/shim.py) imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from corral.wire.agent import ContainerRuntime

RuntimeName = Literal["docker", "podman"]
NAMES: tuple[RuntimeName, ...] = ("docker", "podman")
DEFAULT_TIMEOUT_S = 3.0
# The CDI kind NVIDIA's container toolkit generates (`nvidia-ctk cdi generate`).
NVIDIA_CDI_KIND = "nvidia.com/gpu"
# Where CDI specs live when the runtime does not say (the CDI spec's defaults).
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
_INFO_ARGS: dict[RuntimeName, tuple[str, ...]] = {
    "docker": ("info", "--format", "{{json .}}"),
    "podman": ("info", "--format", "json"),
}
# What the runtime's client reads from its environment to find and configure its engine
# (and nothing the workload sets: the client runs as root on a confined node). A confined
# replica's shim gets almost none of the agent's environment (sandbox/policy.py), so these
# are passed on from the agent's: detection and the run must talk to the same engine.
CLIENT_ENV = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "HOME",
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Docker's container-name rule; podman's is the same.
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


# -- detection ---------------------------------------------------------------------------


def detect(
    timeout_s: float = DEFAULT_TIMEOUT_S, cdi_dirs: Sequence[str] | None = None
) -> list[ContainerRuntime]:
    """The runtimes that answered `info` within `timeout_s` (all asked at once), docker first.

    Blocking (up to `timeout_s`): call it off the event loop. Never raises for what the host
    lacks or does wrong; a runtime that fails in any way is simply not listed.
    `cdi_dirs`: where to look for NVIDIA CDI specs when the runtime does not report its
    own (tests point it at a temporary directory).
    """
    from corral.wire.agent import ContainerRuntime

    deadline = time.monotonic() + timeout_s
    started: list[tuple[RuntimeName, subprocess.Popen[bytes]]] = []
    for name in NAMES:
        path = shutil.which(name)
        if path is None:
            continue
        with contextlib.suppress(OSError):
            started.append((name, _spawn([path, *_INFO_ARGS[name]])))
    found: list[ContainerRuntime] = []
    for name, proc in started:
        out = _collect(proc, deadline)
        info = _parse(out) if out is not None else None
        if info is None:
            continue
        version = _version(name, info)
        if not version:
            continue  # a client that printed its own half and no server's
        gpus = _gpus(name, info, cdi_dirs)
        found.append(ContainerRuntime(name=name, version=version[:100], gpus=gpus))
    return found


def describe(found: Sequence[ContainerRuntime]) -> str:
    """For the agent's log: what was found, or why image jobs will not come here."""
    if not found:
        return (
            "no container runtime answered (docker info / podman info): jobs with an image "
            "are not placed on this node"
        )
    shown = ", ".join(f"{r.name} {r.version}" + (" (GPUs)" if r.gpus else "") for r in found)
    return f"container runtimes: {shown}"


def client_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of `environ` (the agent's) that the runtime's client needs (CLIENT_ENV):
    add them to the client's environment, never to the container's."""
    return {k: environ[k] for k in CLIENT_ENV if k in environ}


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        # A group of its own: on a timeout the whole tree goes, not just the client.
        start_new_session=True,
    )


def _collect(proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
    """Its stdout if it exited 0 before the deadline; else None (and it is killed)."""
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1.0)
        return None
    return out if proc.returncode == 0 else None


def _parse(out: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(out)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _version(name: RuntimeName, info: Mapping[str, Any]) -> str:
    if name == "docker":
        if info.get("ServerErrors"):
            return ""
        return str(info.get("ServerVersion") or "")
    version = info.get("version")
    return str(version.get("Version") or "") if isinstance(version, Mapping) else ""


def _gpus(name: RuntimeName, info: Mapping[str, Any], cdi_dirs: Sequence[str] | None) -> bool:
    """Whether it can pass NVIDIA GPUs through: the toolkit's runtime registered with
    docker, or CDI devices of kind nvidia.com/gpu (reported by docker >= 25, else found in
    the CDI spec directories)."""
    if name == "docker":
        runtimes = info.get("Runtimes")
        if isinstance(runtimes, Mapping) and "nvidia" in runtimes:
            return True
        devices = info.get("DiscoveredDevices")
        if isinstance(devices, list) and any(
            isinstance(d, Mapping) and str(d.get("ID", "")).startswith(NVIDIA_CDI_KIND + "=")
            for d in devices
        ):
            return True
        reported = info.get("CDISpecDirs")
        if cdi_dirs is None and isinstance(reported, list) and reported:
            cdi_dirs = [str(d) for d in reported]
    return _cdi_has_nvidia(cdi_dirs if cdi_dirs is not None else CDI_DIRS)


def _cdi_has_nvidia(directories: Iterable[str]) -> bool:
    for directory in directories:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix not in (".json", ".yaml", ".yml") or not entry.is_file():
                continue
            try:
                text = entry.read_text(errors="replace")
            except OSError:
                continue
            if _cdi_kind(entry.suffix, text) == NVIDIA_CDI_KIND:
                return True
    return False


def _cdi_kind(suffix: str, text: str) -> str | None:
    """A CDI spec's top-level `kind`. YAML specs name it on a line of its own (the
    toolkit writes them so); no YAML parser is needed for that one key."""
    if suffix == ".json":
        try:
            spec = json.loads(text)
        except ValueError:
            return None
        return str(spec.get("kind")) if isinstance(spec, dict) else None
    found = re.search(r"""^kind:\s*["']?([^"'\s]+)["']?\s*$""", text, re.MULTILINE)
    return found.group(1) if found else None


# -- the run command ---------------------------------------------------------------------


def write_env_file(path: str | os.PathLike[str], env: Mapping[str, str]) -> None:
    """The container's environment, one `NAME=value` line each, in a new 0600 file.

    The `--env-file` format has no quoting: a value with a newline (or CR, which the
    runtimes strip, or NUL) cannot be carried, so it is refused with the variable's name
    rather than silently cut. Created with O_EXCL|O_NOFOLLOW: never through a planted link.
    """
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"env: {key!r} is not a variable name (letters, digits, _)")
        if any(c in value for c in "\n\r\0"):
            raise ValueError(
                f"env {key}: a value with a line break or NUL cannot be passed into a "
                "container (the runtime's env file is one line per variable)"
            )
        lines.append(f"{key}={value}\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(lines)


def container_argv(
    runtime: ContainerRuntime | RuntimeName,
    image: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    env_file: str | os.PathLike[str] | None = None,
    cwd: str,
    mounts: Sequence[tuple[str, str]],
    gpus: Sequence[int],
    uid: int | None,
    gid: int | None,
    name: str,
    shm_mb: int | None = None,
) -> list[str]:
    """`<runtime> run ... IMAGE ARGV...` for one replica; the caller runs it (attached).

    `env` is written to `env_file` (a path the caller names, in a directory only it can
    write; it must not exist yet) with `write_env_file`, never put on the command line.
    `mounts`: (host path, container path) pairs, read-write (the working directory,
    volumes). `gpus`: host GPU indices. `uid`/`gid`: who the workload runs as (the
    workspace's user on a confined node); None: the calling process's own identity.
    `shm_mb`: /dev/shm's size (the runtimes' default of 64 MiB breaks NCCL and PyTorch's
    data loader workers).

    Stop the container by `name` (`stop_argv`): killing the attached client does not
    stop a docker container. Raises ValueError naming what is malformed.
    """
    tool = runtime if isinstance(runtime, str) else runtime.name
    if tool not in NAMES:
        raise ValueError(f"runtime: expected docker or podman, not {tool!r}")
    if not image or image.startswith("-") or any(c.isspace() for c in image):
        raise ValueError(f"image: expected an image reference, not {image!r}")
    if not argv:
        raise ValueError("argv: the command to run in the container is empty")
    if not _CONTAINER_NAME.match(name):
        raise ValueError(f"name: {name!r} is not a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    _check_path("cwd", cwd)
    if env and env_file is None:
        raise ValueError("env_file: needed to pass the environment (values never go on argv)")
    cmd = [
        tool,
        "run",
        "--rm",  # the replica's directory is the record; a stopped container is litter
        "--name",  # how the agent stops it (stop_argv) and finds one left behind
        name,
        # corral's ports (rendezvous, served ports) are host ports the scheduler hands
        # out and the agent probes on the host; multi-node NCCL needs the host's NICs.
        "--network",
        "host",
        "--cap-drop",  # nothing of root's power, even for uid 0 in the image
        "ALL",
        "--security-opt",  # setuid binaries in the image cannot regain any
        "no-new-privileges",
        "--workdir",
        cwd,
    ]
    cmd += _user_flags(tool, uid, gid)
    if shm_mb is not None:
        if shm_mb < 1:
            raise ValueError(f"shm_mb: expected at least 1, not {shm_mb}")
        cmd += ["--shm-size", f"{shm_mb}m"]
    for host, path in mounts:
        _check_path("mount host path", host)
        _check_path("mount container path", path)
        cmd += ["--volume", f"{host}:{path}"]
    gpu_flags = _gpu_flags(tool, gpus)  # checked before anything is written
    if env_file is not None:
        write_env_file(env_file, env)
        cmd += ["--env-file", os.fspath(env_file)]
    return [*cmd, *gpu_flags, image, *argv]


def stop_argv(runtime: ContainerRuntime | RuntimeName, name: str, grace_s: int = 10) -> list[str]:
    """Stop the named container (TERM, then KILL after `grace_s`); --rm removes it."""
    tool = runtime if isinstance(runtime, str) else runtime.name
    return [tool, "stop", "--time", str(max(0, grace_s)), name]


def _user_flags(tool: str, uid: int | None, gid: int | None) -> list[str]:
    # Never the image's own user: it is root in most images, and files the workload
    # writes into the working directory and volumes must be the workspace's.
    if uid is None:
        uid, gid = os.getuid(), os.getgid()
        if tool == "podman" and uid != 0:
            # Rootless podman maps container uid 0 to the caller; keep-id maps the
            # caller's uid to itself, so files on the mounts stay the caller's.
            return ["--userns", "keep-id", "--user", f"{uid}:{gid}"]
    if uid < 0 or (gid is not None and gid < 0):
        raise ValueError(f"uid/gid: expected non-negative ids, not {uid}:{gid}")
    return ["--user", f"{uid}:{uid if gid is None else gid}"]


def _gpu_flags(tool: str, gpus: Sequence[int]) -> list[str]:
    if any(g < 0 for g in gpus):
        raise ValueError(f"gpus: expected GPU indices, not {list(gpus)}")
    if not gpus:
        # CUDA images set NVIDIA_VISIBLE_DEVICES=all: on a node whose default runtime is
        # NVIDIA's that would hand every GPU to a job that asked for none.
        return ["--env", "NVIDIA_VISIBLE_DEVICES=void"]
    if tool == "docker":
        # The quotes are part of the value: docker splits --gpus on commas otherwise.
        flags = ["--gpus", '"device=' + ",".join(str(g) for g in gpus) + '"']
    else:
        flags = []
        for g in gpus:
            flags += ["--device", f"{NVIDIA_CDI_KIND}={g}"]
    # The container sees only its GPUs, numbered from 0: the host indices the server put
    # in CUDA_VISIBLE_DEVICES would name GPUs that are not there. After --env-file: wins.
    visible = ",".join(str(i) for i in range(len(gpus)))
    return [*flags, "--env", f"CUDA_VISIBLE_DEVICES={visible}"]


def _check_path(what: str, path: str) -> None:
    # -v splits on ':'; a comma or newline has no business in these paths either.
    if not path.startswith("/") or any(c in path for c in ":,\n\0"):
        raise ValueError(f"{what}: expected an absolute path without ':' or ',', not {path!r}")
