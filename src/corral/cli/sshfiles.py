"""corral's SSH files: `$CORRAL_HOME/ssh/config` (one block per workspace, the corral
executable as ProxyCommand, never a token), the pinned host keys in
`$CORRAL_HOME/ssh/known_hosts`, the `Include` in `~/.ssh/config`, and corral's own key."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from corral.cli.config import CliState
from corral.cli.output import CliError, note

if TYPE_CHECKING:
    from corral.client import Client


SSH_USER = "corral"
KEY_FILE = "id_ed25519"
_HEADER = "# Written by `corral pod ssh-config`: each workspace's block is rewritten; edit none.\n"
_BEGIN = "# corral workspace "
_END = "# end corral workspace "


# -- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshPaths:
    """Where corral keeps its SSH files, and the user's own config."""

    home: Path  # $CORRAL_HOME

    @property
    def dir(self) -> Path:
        return self.home / "ssh"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def key(self) -> Path:
        return self.dir / KEY_FILE

    @staticmethod
    def user_config() -> Path:
        # Path.home() reads $HOME, as OpenSSH does not, but as tests and containers expect.
        return Path.home() / ".ssh" / "config"


def host_alias(workspace: str) -> str:
    return f"corral.{workspace}"


def corral_argv() -> list[str]:
    """The command that runs this CLI, absolute: ssh runs the ProxyCommand from anywhere."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("corral") and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    found = shutil.which("corral")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "corral.cli.main"]


def proxy_command(argv: list[str], server: str | None, *words: str) -> str:
    """A shell line (ssh runs it with the user's shell); `%` is ssh's token character."""
    line = [*argv, *(["--server", server] if server else []), *words]
    return " ".join(shlex.quote(w) for w in line).replace("%", "%%")


def _ssh_arg(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def host_block(
    workspace: str, pods: list[str], command: list[str], server: str | None, paths: SshPaths
) -> str:
    lines = [f"{_BEGIN}{workspace}\n"]
    for name in pods:
        proxy = proxy_command(command, server, "pod", "proxy", "--workspace", workspace, name)
        lines += [
            f"Host {name}\n",
            f"  HostName {name}\n",
            f"  User {SSH_USER}\n",
            f"  ProxyCommand {proxy}\n",
            f"  HostKeyAlias {host_alias(workspace)}\n",
            f"  UserKnownHostsFile {_ssh_arg(str(paths.known_hosts))}\n",
            "  StrictHostKeyChecking yes\n",
        ]
        if paths.key.exists():
            lines.append(f"  IdentityFile {_ssh_arg(str(paths.key))}\n")
    lines.append(f"{_END}{workspace}\n")
    return "".join(lines)


def replace_block(text: str, workspace: str, block: str) -> str:
    """corral's config with `workspace`'s block replaced (other workspaces' stay)."""
    pattern = re.compile(
        rf"^{re.escape(_BEGIN + workspace)}\n.*?^{re.escape(_END + workspace)}\n",
        re.MULTILINE | re.DOTALL,
    )
    body = text.removeprefix(_HEADER)
    body = pattern.sub("", body).strip("\n")
    return _HEADER + (body + "\n" if body else "") + block


def known_hosts_text(text: str, workspace: str, public_key: str) -> str:
    alias = host_alias(workspace)
    kept = [line for line in text.splitlines() if line.split(" ", 1)[0] != alias]
    return "\n".join([*kept, f"{alias} {public_key.strip()}"]) + "\n"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Atomically, `mode` from the start (no reader sees it half-written or too open)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def include_line(config: Path) -> str:
    return f"Include {_ssh_arg(str(config))}\n"


def is_included(user_config: Path, config: Path) -> bool:
    for line in read_text(user_config).splitlines():
        words = line.strip().split(None, 1)
        if (
            len(words) == 2
            and words[0].lower() == "include"
            and words[1].strip().strip('"') == str(config)
        ):
            return True
    return False


def add_include(user_config: Path, config: Path) -> bool:
    """`Include config` at the top of the user's ssh config, once (an Include after a `Host`
    line would apply to that host only). True when it was added."""
    if is_included(user_config, config):
        return False
    user_config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = read_text(user_config)
    mode = user_config.stat().st_mode & 0o777 if user_config.exists() else 0o600
    write_private(user_config, include_line(config) + ("\n" + old if old else ""), mode)
    return True


def write_hosts(
    paths: SshPaths,
    workspace: str,
    pods: list[str],
    host_public_key: str,
    server: str | None = None,
    command: list[str] | None = None,
) -> None:
    """corral's ssh config (this workspace's hosts) and its known host."""
    block = host_block(workspace, pods, command or corral_argv(), server, paths)
    write_private(paths.config, replace_block(read_text(paths.config), workspace, block))
    hosts = known_hosts_text(read_text(paths.known_hosts), workspace, host_public_key)
    write_private(paths.known_hosts, hosts, 0o644)


# -- keys -------------------------------------------------------------------------------------


def key_name() -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return f"corral-{host or 'host'}"[:63].rstrip("-")


def _key_body(line: str) -> str:
    """`type base64`, without the comment: what identifies a public key."""
    return " ".join(line.split()[:2])


def make_key(path: Path) -> str:
    """A new ed25519 key pair at `path` (and `path`.pub); its public line."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment=key_name())
    public = key.export_public_key("openssh").decode()
    write_private(path, key.export_private_key("openssh").decode())
    write_private(path.with_name(path.name + ".pub"), public, 0o644)
    return public.strip()


def ensure_key(client: Client, paths: SshPaths, *, only_if_none: bool) -> None:
    """Make corral's own key when missing and register it with the workspace: when the
    workspace has no key at all (`only_if_none`), else whenever it is not registered."""
    keys = client.list_ssh_keys()
    if only_if_none and keys:
        return
    if paths.key.exists():
        public = read_text(paths.key.with_name(paths.key.name + ".pub")).strip()
        if not public:
            public = _public_of(paths.key)
    else:
        public = make_key(paths.key)
        note(f"made an SSH key for corral: {paths.key}")
    if any(_key_body(k.public_key) == _key_body(public) for k in keys):
        return
    from corral.client.errors import Conflict

    name = key_name()
    try:
        client.add_ssh_key(name, public)
    except Conflict:
        name = f"{name[:50]}-{os.urandom(3).hex()}"
        client.add_ssh_key(name, public)
    note(f"registered it with workspace {client.workspace} as ssh key {name}")


def _public_of(path: Path) -> str:
    import asyncssh

    try:
        return asyncssh.read_private_key(str(path)).export_public_key("openssh").decode().strip()
    except (asyncssh.KeyImportError, OSError) as exc:
        raise CliError(f"{path}: cannot read this SSH key: {exc}") from None


# -- ssh-config ----------------------------------------------------------------------------------


def named_server(st: CliState) -> str | None:
    """The server to name in a ProxyCommand: one given by --server or CORRAL_SERVER, which an
    ssh started elsewhere (an IDE) would not see; None when config.json (or the default)
    says it, where the proxy finds it too."""
    settings = st.settings()
    return settings.server if settings.origin.server in ("--server", "CORRAL_SERVER") else None


def warn_env_token(st: CliState) -> None:
    if st.settings().origin.token == "CORRAL_TOKEN":
        from corral.cli.output import warn

        warn(
            "the token comes from CORRAL_TOKEN: an ssh started where it is not set (an IDE) "
            "cannot reach the pods; save it in $CORRAL_HOME/config.json (`corral up` does)"
        )


def configure(st: CliState, client: Client, *, include: bool = True) -> SshPaths:
    """Write corral's ssh config for the client's workspace (and its key, and the Include)."""
    paths = SshPaths(st.home())
    ensure_key(client, paths, only_if_none=True)
    pods = sorted(p.name for p in client.list_pods())
    write_hosts(paths, client.workspace, pods, client.host_key().public_key, named_server(st))
    if include and add_include(SshPaths.user_config(), paths.config):
        note(f"added `{include_line(paths.config).strip()}` to {SshPaths.user_config()}")
    return paths


def refresh_if_included(st: CliState, client: Client) -> None:
    """After `pod create|start`: keep the hosts current where the user set ssh-config up."""
    paths = SshPaths(st.home())
    if not is_included(SshPaths.user_config(), paths.config):
        return
    pods = sorted(p.name for p in client.list_pods())
    write_hosts(paths, client.workspace, pods, client.host_key().public_key, named_server(st))
