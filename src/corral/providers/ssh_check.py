"""The ssh provider's check step: what a host is, and whether it can run the agent bundle.

One probe script (POSIX sh, on the connection's stdin) reports the OS, arch, Python
(version, implementation, platform, venv), free disk for the install dir and /tmp, tar,
root or `sudo -n`, systemd and nvidia-smi's GPUs; `check` turns that into HostFacts or a
StepFailed("check", ...) line naming what is missing and what the control plane supplies.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.providers.ssh import StepFailed, run

if TYPE_CHECKING:
    import asyncssh

MIN_PYTHON = (3, 10)


@dataclass(frozen=True)
class BundleMeta:
    python: str
    implementation: str
    platform: str
    bytes: int

    def describe(self) -> str:
        impl = "CPython" if self.implementation == "cpython" else self.implementation
        return f"{impl} {self.python} on {self.platform}"


@dataclass(frozen=True)
class HostFacts:
    os: str
    arch: str
    distro: str
    python_path: str
    python: str
    sudo: str  # "" (root, or a directory the user owns) or "sudo -n "
    systemd: bool
    gpus: tuple[str, ...]  # nvidia-smi's names, one per GPU


def _probe(python: str, install_dir: str) -> str:
    py = shlex.quote(python)
    d = shlex.quote(install_dir)
    return f"""
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "uid=$(id -u)"; echo "user=$(id -un)"
if [ -r /etc/os-release ]; then (. /etc/os-release; echo "distro=${{PRETTY_NAME:-$ID}}"); fi
P="$(command -v {py} 2>/dev/null || true)"; echo "python_path=$P"
if [ -n "$P" ]; then "$P" -c 'import sys, sysconfig
print("python=%d.%d.%d" % sys.version_info[:3])
print("implementation=" + sys.implementation.name)
print("platform=" + sysconfig.get_platform())' 2>/dev/null
"$P" -c 'import venv' 2>/dev/null && echo venv=1; fi
p={d}; while [ ! -e "$p" ]; do p="$(dirname "$p")"; done
echo "disk_kb=$(df -Pk "$p" | awk 'NR==2 {{print $4}}')"
echo "tmp_kb=$(df -Pk /tmp | awk 'NR==2 {{print $4}}')"
[ -w "$p" ] && echo writable=1
command -v tar >/dev/null && echo tar=1
if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then echo sudo=1; fi
[ -d /run/systemd/system ] && command -v systemctl >/dev/null && echo systemd=1
if command -v nvidia-smi >/dev/null; then
  echo nvidia_smi=1
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null |
    sed 's/^/gpu=/'
fi
exit 0
"""


async def check(
    conn: asyncssh.SSHClientConnection,
    bundle: BundleMeta,
    install_dir: str,
    python: str = "python3",
    require_gpus: bool = False,
) -> HostFacts:
    """What the host is; StepFailed("check", ...) when it cannot run the bundle's agent."""
    status, stdout, stderr = await run(conn, "check", "sh -s", stdin=_probe(python, install_dir))
    if status != 0:
        raise StepFailed("check", f"the probe failed: {stderr.strip()[:200]}", "check the host")
    facts: dict[str, str] = {}
    gpus: list[str] = []
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key == "gpu":
            gpus.append(value.strip())
        elif sep:
            facts[key] = value.strip()
    os_name, arch = facts.get("os", "?"), facts.get("arch", "?")
    if os_name != "Linux":
        raise StepFailed("check", f"the host runs {os_name}", "the agent runs on Linux")
    _check_python(facts, python, bundle)
    need_kb = 4 * bundle.bytes // 1024
    free_kb = int(facts.get("disk_kb") or 0)
    if free_kb < need_kb:
        raise StepFailed(
            "check",
            f"{free_kb // 1024} MB free for {install_dir}; the agent needs {need_kb // 1024} MB",
            "free disk space or pick another --install-dir",
        )
    if int(facts.get("tmp_kb") or 0) < bundle.bytes // 1024 + 1024:
        raise StepFailed(
            "check",
            f"{int(facts.get('tmp_kb') or 0) // 1024} MB free in /tmp for the "
            f"{bundle.bytes // 2**20} MB bundle",
            "free disk space in /tmp",
        )
    if "tar" not in facts:
        raise StepFailed("check", "no tar on the host", "install tar")
    sudo = ""
    if facts.get("uid") != "0" and "writable" not in facts:
        if "sudo" not in facts:
            raise StepFailed(
                "check",
                f"{facts.get('user', 'the user')} may not write {install_dir} and `sudo -n` "
                "asks for a password",
                "log in as root, allow passwordless sudo, or give an --install-dir the user owns",
            )
        sudo = "sudo -n "
    if require_gpus:
        if "nvidia_smi" not in facts:
            raise StepFailed(
                "check", "no nvidia-smi on the host", "install the NVIDIA driver, or drop --gpus"
            )
        if not gpus:
            raise StepFailed(
                "check",
                "nvidia-smi lists no GPUs (is the driver loaded?)",
                "check `nvidia-smi` on the host",
            )
    return HostFacts(
        os=os_name,
        arch=arch,
        distro=facts.get("distro", ""),
        python_path=facts["python_path"],
        python=facts.get("python", ""),
        sudo=sudo,
        # A system unit needs root; a user without it gets the supervised process.
        systemd="systemd" in facts and (facts.get("uid") == "0" or bool(sudo)),
        gpus=tuple(gpus),
    )


def _check_python(facts: dict[str, str], python: str, bundle: BundleMeta) -> None:
    if not facts.get("python_path"):
        raise StepFailed(
            "check",
            f"no {python} on the host",
            f"install {bundle.describe()} there (e.g. apt-get install python3), "
            "or name it with --python",
        )
    version = facts.get("python", "")
    try:
        have = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        have = (0, 0)
    got = (
        f"{facts.get('implementation', '?')} {version or '?'} on "
        f"{facts.get('platform', '?')} ({facts['python_path']})"
    )
    if (
        have < MIN_PYTHON
        or ".".join(map(str, have)) != bundle.python
        or facts.get("implementation") != bundle.implementation
        or facts.get("platform") != bundle.platform
    ):
        raise StepFailed(
            "check",
            f"the host has {got}; the control plane's agent bundle is for {bundle.describe()}",
            f"install Python {bundle.python} on the host and pass --python python{bundle.python}"
            ", or run the control plane on the host's Python",
        )
    if "venv" not in facts:
        raise StepFailed(
            "check", f"{facts['python_path']} has no venv module", "install python3-venv"
        )
