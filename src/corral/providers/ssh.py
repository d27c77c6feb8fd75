"""The ssh provider: hosts an operator already has, joined over SSH.

`corral node add ssh://user@host` (cli/nodeadd.py) runs these steps on one connection:

```
 connect  key or agent; refused key / unreachable / timeout each say so
 check    OS, arch, Python (the bundle's major.minor, implementation, platform),
          free disk, nvidia-smi when GPUs are required, root or `sudo -n`
 upload   the agent bundle over SFTP (the host reaches nothing but the control plane)
 install  providers/install.py's script on `bash -s` stdin (the join token is in the
          script's text, never on a command line)
 ready    (the caller) waits until the node is ready through the API
```

A failure raises `StepFailed(step, what, fix)`; `str()` is one line. The ssh pools are
static: the autoscaler never makes or removes these machines (`SshProvider.launch`
refuses), and `terminate` uninstalls the agent over SSH.

Where a node came from is kept in its labels, so that `corral node remove` finds it again:
`provider=ssh`, `ssh-host`, `ssh-port`, `ssh-user`, `ssh-install-dir`. The server sets them
from the one-use join token `node add` made (wire.api.BOUND_LABELS): the node cannot.

Host keys: `node add` is OpenSSH's StrictHostKeyChecking=accept-new on known_hosts
(--known-hosts FILE, else ~/.ssh/known_hosts): a listed host must show its listed key; an
unlisted one is accepted and its key written there (0600), so that `node remove`, which
accepts only a listed key, talks to the same machine. The check step: ssh_check.py.
"""

from __future__ import annotations

import asyncio
import errno
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from corral.providers import ssh_hostkeys as hostkeys
from corral.providers.base import (
    Instance,
    InstanceState,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)
from corral.providers.install import DEFAULT_INSTALL_DIR, uninstall_script

if TYPE_CHECKING:
    import asyncssh

    from corral.providers.ssh_check import HostFacts

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 120.0
LABEL_HOST = "ssh-host"
LABEL_PORT = "ssh-port"
LABEL_USER = "ssh-user"
LABEL_DIR = "ssh-install-dir"

# (step, message): a step starts with message "" and may report details as it goes.
Progress = Callable[[str, str], None]


class StepFailed(Exception):
    def __init__(self, step: str, what: str, fix: str) -> None:
        super().__init__(f"step {step}: {what} ({fix})")
        self.step = step
        self.what = what
        self.fix = fix


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        """`ssh://user@host[:port]`; raises ValueError with a line saying what is wrong."""
        text = url.strip()
        if "://" not in text:
            text = "ssh://" + text
        parts = urlsplit(text)
        try:
            port = parts.port or 22
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: expected ssh://user@host[:port]")
        if not parts.username:
            raise ValueError(f"{url!r}: name the user, e.g. ssh://root@{parts.hostname}")
        return cls(parts.username, parts.hostname, port)

    def __str__(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.host}{port}"

    def labels(self, install_dir: str) -> dict[str, str]:
        return {
            "provider": "ssh",
            LABEL_HOST: self.host,
            LABEL_PORT: str(self.port),
            LABEL_USER: self.user,
            LABEL_DIR: install_dir,
        }

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> tuple[SshTarget, str] | None:
        """The target and install dir a node added over ssh recorded, or None."""
        if labels.get("provider") != "ssh" or LABEL_HOST not in labels:
            return None
        try:
            port = int(labels.get(LABEL_PORT, "22"))
        except ValueError:
            port = 22
        target = cls(labels.get(LABEL_USER, "root"), labels[LABEL_HOST], port)
        return target, labels.get(LABEL_DIR, DEFAULT_INSTALL_DIR)


async def connect(
    target: SshTarget,
    key: Path | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    known_hosts: Path | None = None,
    accept_new: bool = True,
) -> asyncssh.SSHClientConnection:
    """A connection to `target` with `key` (else the ssh agent and ~/.ssh's keys).

    known_hosts (None: ~/.ssh/known_hosts) that lists the host must show its key. A host it
    does not list is accepted and recorded there when `accept_new`, else refused.
    """
    import asyncssh

    path = hostkeys.known_hosts_file(known_hosts)
    try:
        trusted = hostkeys.listed(path, target.host, target.port)
    except (OSError, ValueError) as exc:
        raise StepFailed(
            "connect", f"cannot read {path}: {exc}", "fix or remove that known_hosts file"
        ) from None
    if trusted is None and not accept_new:
        raise StepFailed(
            "connect",
            f"{path} does not list the host key of {target.host}",
            f"add it (ssh-keyscan -p {target.port} {target.host} >> {path}, once you have "
            "checked it) or give --known-hosts FILE",
        )
    options: dict[str, object] = {
        "username": target.user,
        "port": target.port,
        "known_hosts": trusted,
        "connect_timeout": timeout,
    }
    if key is not None:
        if not key.is_file():
            raise StepFailed("connect", f"no key file {key}", "give --key the private key's path")
        try:
            options["client_keys"] = [asyncssh.read_private_key(str(key))]
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            raise StepFailed(
                "connect", f"cannot read the key {key}: {exc}", "give an unencrypted key"
            ) from None
        options["agent_path"] = None
    try:
        conn = await asyncssh.connect(target.host, **options)
    except asyncssh.PermissionDenied:
        raise StepFailed(
            "connect",
            f"{target} refused the key",
            "check --key and the user's ~/.ssh/authorized_keys on the host",
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise StepFailed(
            "connect",
            f"the host key of {target.host} does not match known_hosts: {exc.reason or exc}",
            "check that this is the right host; if its key changed, update known_hosts",
        ) from None
    except TimeoutError:
        raise StepFailed(
            "connect",
            f"no answer from {target.host}:{target.port} within {timeout:g} s",
            "check the address, the port and that sshd runs there",
        ) from None
    except ConnectionRefusedError:
        raise StepFailed(
            "connect",
            f"{target.host}:{target.port} refused the connection",
            "check that sshd listens on that port",
        ) from None
    except OSError as exc:
        what = {
            errno.EHOSTUNREACH: "host unreachable",
            errno.ENETUNREACH: "network unreachable",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StepFailed(
            "connect",
            f"{target.host}:{target.port}: {what}",
            "check the address and that this machine has a route to it",
        ) from None
    except asyncssh.Error as exc:
        raise StepFailed(
            "connect", f"{target}: {exc.reason or exc}", "check the host's sshd"
        ) from None
    if trusted is None:
        host_key = conn.get_server_host_key()
        if host_key is None:  # asyncssh always has one once connected; never trust none
            conn.close()
            raise StepFailed("connect", f"{target.host} showed no host key", "check its sshd")
        try:
            hostkeys.remember(path, target.host, target.port, host_key)
        except OSError as exc:
            conn.close()
            raise StepFailed(
                "connect",
                f"cannot record the host key of {target.host} in {path}: {exc.strerror or exc}",
                "make that file writable, or give --known-hosts FILE",
            ) from None
    return conn


def host_key_fingerprint(conn: asyncssh.SSHClientConnection) -> str:
    key = conn.get_server_host_key()
    return key.get_fingerprint() if key is not None else "?"


async def run(
    conn: asyncssh.SSHClientConnection,
    step: str,
    command: str,
    *,
    stdin: str | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `command` on the host."""
    import asyncssh

    try:
        done = await asyncio.wait_for(conn.run(command, input=stdin, check=False), timeout)
    except TimeoutError:
        raise StepFailed(
            step, f"`{command[:60]}` did not finish within {timeout:g} s", "check the host"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise StepFailed(step, f"the connection failed: {exc}", "check the host") from None
    status = done.exit_status if done.exit_status is not None else 255
    return status, _text(done.stdout), _text(done.stderr)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value or "")


async def upload(conn: asyncssh.SSHClientConnection, bundle: Path, progress: Progress) -> str:
    """Copy the bundle to a fresh directory under /tmp; returns its path there."""
    import asyncssh

    status, out, err = await run(conn, "upload", "mktemp -d /tmp/corral-bundle.XXXXXX")
    if status != 0:
        raise StepFailed("upload", f"mktemp failed: {err.strip()[:200]}", "check /tmp on the host")
    remote = f"{out.strip()}/bundle.tar.gz"
    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(bundle), remote)
    except (asyncssh.Error, OSError) as exc:
        raise StepFailed(
            "upload", f"copying the bundle failed: {exc}", "check free space in /tmp"
        ) from None
    progress("upload", f"{bundle.stat().st_size / 2**20:.0f} MB")
    return remote


async def install(
    conn: asyncssh.SSHClientConnection, facts: HostFacts, script: str, remote_bundle: str
) -> None:
    """Run an install script (from providers/install.py) on the host; removes the copied
    bundle afterwards either way."""
    header = f"export CORRAL_PYTHON={shlex.quote(facts.python_path)}\n"
    try:
        status, _out, err = await run(
            conn, "install", f"{facts.sudo}bash -s", stdin=header + script
        )
    finally:
        await run(conn, "install", f"rm -rf {shlex.quote(str(Path(remote_bundle).parent))}")
    if status != 0:
        raise StepFailed("install", _last_error(err), "see the message above")


async def uninstall(conn: asyncssh.SSHClientConnection, install_dir: str, sudo: str = "") -> None:
    status, _out, err = await run(
        conn, "uninstall", f"{sudo}bash -s", stdin=uninstall_script(install_dir)
    )
    if status != 0:
        raise StepFailed("uninstall", _last_error(err), f"remove {install_dir} on the host by hand")


async def needs_sudo(conn: asyncssh.SSHClientConnection, install_dir: str) -> str:
    """ "sudo -n " when the user is not root and cannot write `install_dir`, else ""."""
    d = shlex.quote(install_dir)
    _status, out, _err = await run(
        conn, "connect", f'[ "$(id -u)" = 0 ] || [ -w {d} ] || echo sudo'
    )
    return "sudo -n " if out.strip() == "sudo" else ""


async def agent_log_tail(
    conn: asyncssh.SSHClientConnection, install_dir: str, sudo: str = "", lines: int = 5
) -> str:
    """The last lines of the agent's log on the host (supervised process or unit)."""
    d = shlex.quote(install_dir)
    _status, out, _err = await run(
        conn,
        "ready",
        f'{sudo}sh -c \'if [ -f {d}/unit ]; then journalctl -u "$(cat {d}/unit)" -n {lines} '
        f"--no-pager; else tail -n {lines} {d}/agent.log; fi' 2>/dev/null",
        timeout=15,
    )
    return out.strip()


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("corral-install: error: "):
            return line.removeprefix("corral-install: error: ")
    return lines[-1][:300] if lines else "the script failed without a message"


class SshProvider:
    """Static: its machines are the hosts an operator added with `corral node add`.
    `list` reads the nodes' labels through `nodes` (a callable giving (name, labels) of
    every node), and `terminate` uninstalls the agent over SSH."""

    name = "ssh"
    static = True

    def __init__(
        self,
        nodes: Callable[[], Sequence[tuple[str, dict[str, str]]]],
        key: Path | None = None,
    ) -> None:
        self._nodes = nodes
        self._key = key

    def launch(self, request: LaunchRequest) -> list[Instance]:
        raise ProviderError(
            LaunchErrorKind.INVALID, "ssh pools are static: add hosts with corral node add"
        )

    def list(self, pool: str | None = None) -> list[Instance]:
        found = []
        for name, labels in self._nodes():
            where = SshTarget.from_labels(labels)
            if where is None or (pool is not None and labels.get("pool") != pool):
                continue
            target, _dir = where
            found.append(
                Instance(
                    provider_id=f"{target}",
                    node_name=name,
                    pool=labels.get("pool", ""),
                    state=InstanceState.RUNNING,
                    region=labels.get("region", ""),
                    zone=labels.get("zone"),
                    address=target.host,
                )
            )
        return found

    def terminate(self, provider_ids: Sequence[str]) -> None:
        wanted = set(provider_ids)
        for _name, labels in self._nodes():
            where = SshTarget.from_labels(labels)
            if where is not None and str(where[0]) in wanted:
                try:
                    asyncio.run(remove_agent(where[0], where[1], self._key))
                except StepFailed as exc:
                    raise ProviderError(LaunchErrorKind.UNREACHABLE, str(exc)) from None


async def remove_agent(
    target: SshTarget, install_dir: str, key: Path | None, known_hosts: Path | None = None
) -> None:
    """Stop and remove the agent `node add` installed; the host key must be listed."""
    conn = await connect(target, key, known_hosts=known_hosts, accept_new=False)
    async with conn:
        await uninstall(conn, install_dir, await needs_sudo(conn, install_dir))
