"""Reaching a pod (or a job's replica) over SSH: `corral pod ssh-config|proxy|ssh|exec|forward`
and `corral job ssh|exec|proxy`.

`ssh-config` writes corral's hosts into `$CORRAL_HOME/ssh/config`, pins the workspace's host
key in `$CORRAL_HOME/ssh/known_hosts`, and includes the file from `~/.ssh/config` once, so that
plain OpenSSH (and VS Code, scp, rsync) works. The file names the corral executable as the
ProxyCommand and never holds a token: the proxy finds it as every command does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import CliState, state
from corral.cli.options import WorkspaceOpt
from corral.cli.output import CliError, note
from corral.loop import run_loop

if TYPE_CHECKING:
    from corral.client.relay import RelayKind

from corral.cli.sshfiles import (
    SSH_USER,
    SshPaths,
    configure,
    corral_argv,
    ensure_key,
    host_alias,
    known_hosts_text,
    named_server,
    proxy_command,
    read_text,
    warn_env_token,
    write_private,
)

NameArg = Annotated[str, typer.Argument(help="The pod's name.", show_default=False)]


def ssh_config(ctx: typer.Context, workspace: WorkspaceOpt = None) -> None:
    """Write corral's hosts to $CORRAL_HOME/ssh/config and include it from ~/.ssh/config.

    After that plain OpenSSH reaches every pod of the workspace: ssh NAME, scp, rsync,
    sftp, ssh -L, and VS Code / Cursor Remote-SSH. The host key is pinned; no token is
    written. Without a registered SSH key, makes one ($CORRAL_HOME/ssh/id_ed25519) and
    registers it.
    """
    st = state(ctx)
    with st.client(workspace) as client:
        paths = configure(st, client)
        count = len(client.list_pods())
    warn_env_token(st)
    note(f"wrote {paths.config}: {count} pod(s) of workspace {client.workspace}")


# -- the proxy ------------------------------------------------------------------------------------


def run_proxy(
    st: CliState, kind: RelayKind, name: str, replica: int, workspace: str | None
) -> None:
    """stdin/stdout <-> the relay; exits 255 with one line on stderr when it fails, as ssh.
    Kept free of rich and the SDK on its way: it runs on every `ssh` to a pod."""
    from corral.client.relay import RelayError, proxy, relay_path
    from corral.urls import ws_url

    try:
        settings = st.settings(workspace)
        ws = settings.workspace
        if ws is None:
            with st.client(workspace) as client:
                ws = client.workspace
        url = ws_url(settings.server, relay_path(ws, kind, name, replica))
        problem = run_loop(proxy(url, settings.token))
    except RelayError as exc:
        problem = str(exc)
    except KeyboardInterrupt:
        problem = "interrupted"
    except Exception as exc:
        from corral.client.errors import CorralError

        if not isinstance(exc, CorralError):
            raise
        problem = str(exc)
    if problem:
        sys.stderr.write(f"corral: {kind} {name}: {problem}\n")
        sys.stderr.flush()
        raise typer.Exit(255)


def pod_proxy(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """The ProxyCommand of `ssh NAME`: carries stdin/stdout to the pod through the server."""
    run_proxy(state(ctx), "pod", name, 0, workspace)


# -- ssh, exec, forward --------------------------------------------------------------------------


def pod_ssh(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Open a shell in a pod with OpenSSH (refreshes the ssh config first).

    Arguments after `--` go to ssh: corral pod ssh NAME -- -L 8888:localhost:8888.
    """
    from corral.cli.inline import inline_argv

    st = state(ctx)
    with st.client(workspace) as client:
        configure(st, client)
    _exec_ssh([*_config_args(), name, *(inline_argv(ctx) or [])])


def _config_args() -> list[str]:
    """`-F ~/.ssh/config` where $HOME is not the home OpenSSH would read (it asks the password
    database): the config that holds the Include is the one in $HOME."""
    import pwd

    try:
        real = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return []
    return [] if real == Path.home() else ["-F", str(SshPaths.user_config())]


def job_ssh(st: CliState, name: str, replica: int, workspace: str | None, args: list[str]) -> None:
    with st.client(workspace) as client:
        paths = SshPaths(st.home())
        ensure_key(client, paths, only_if_none=True)
        ws = client.workspace
        known = known_hosts_text(read_text(paths.known_hosts), ws, client.host_key().public_key)
        write_private(paths.known_hosts, known, 0o644)
    words = ("job", "proxy", "--workspace", ws, "--replica", str(replica), name)
    options = [
        f"ProxyCommand={proxy_command(corral_argv(), named_server(st), *words)}",
        f"HostKeyAlias={host_alias(ws)}",
        f"UserKnownHostsFile={paths.known_hosts}",
        "StrictHostKeyChecking=yes",
    ]
    argv = [w for o in options for w in ("-o", o)]
    if paths.key.exists():
        argv += ["-i", str(paths.key)]
    # ssh takes options after the destination too: `-- -L 8888:localhost:8888` and a command.
    _exec_ssh([*argv, f"{SSH_USER}@{name}", *args])


def _exec_ssh(args: list[str]) -> None:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise CliError(
            "ssh (OpenSSH's client) is not installed",
            hint="install openssh-client, or use `corral pod exec` which needs none",
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(ssh, ["ssh", *args])


@dataclass(frozen=True)
class Target:
    kind: RelayKind
    name: str
    replica: int = 0


def _session_args(
    st: CliState, target: Target, workspace: str | None
) -> tuple[str, str | None, str, str]:
    """(relay URL, token, key path, host key): made and registered if missing."""
    with st.client(workspace) as client:
        paths = SshPaths(st.home())
        ensure_key(client, paths, only_if_none=False)
        host_key = client.host_key().public_key
        url = client.relay_url(target.kind, target.name, target.replica)
        return url, client.token, str(paths.key), host_key


def run_exec(st: CliState, target: Target, command: list[str], workspace: str | None) -> None:
    """`pod exec` / `job exec`: run COMMAND there with asyncssh; exit with its exit code."""
    if not command:
        raise CliError("nothing to run: put the command after `--`", code=2)
    from corral.client.relay import RelayError, exec_command

    url, token, key, host_key = _session_args(st, target, workspace)
    line = command[0] if len(command) == 1 else shlex.join(command)
    try:
        code = run_loop(exec_command(url, token, key, host_key, line))
    except RelayError as exc:
        raise CliError(f"{target.kind} {target.name}: {exc}") from None
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def pod_exec(ctx: typer.Context, name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Run a command in a pod; stream its output; exit with its exit code (no OpenSSH needed).

    corral pod exec NAME -- nvidia-smi. A terminal gets a PTY.
    """
    from corral.cli.inline import inline_argv

    run_exec(state(ctx), Target("pod", name), inline_argv(ctx) or [], workspace)


def parse_ports(value: str) -> tuple[int, int]:
    """`8888` or `LOCAL:REMOTE`."""
    local, _, remote = value.partition(":")
    try:
        ports = (int(local), int(remote or local))
    except ValueError:
        raise CliError(f"PORT: expected 8888 or LOCAL:REMOTE, got {value!r}", code=2) from None
    if not all(0 < p < 65536 for p in ports):
        raise CliError(f"PORT: ports are 1-65535, got {value!r}", code=2)
    return ports


def pod_forward(
    ctx: typer.Context,
    name: NameArg,
    port: Annotated[
        str, typer.Argument(metavar="PORT[:REMOTE]", help="Local port, and the pod's if other.")
    ],
    workspace: WorkspaceOpt = None,
) -> None:
    """Forward a local port to a port in the pod (e.g. JupyterLab's 8888) until Ctrl-C."""
    from corral.client.relay import RelayError, forward

    local, remote = parse_ports(port)
    url, token, key, host_key = _session_args(state(ctx), Target("pod", name), workspace)

    def ready(bound: int) -> None:
        note(f"forwarding http://127.0.0.1:{bound} -> {name}:{remote} (Ctrl-C stops)")

    try:
        run_loop(forward(url, token, key, host_key, local, remote, ready))
    except RelayError as exc:
        raise CliError(f"pod {name}: {exc}") from None
    except KeyboardInterrupt:
        note("stopped forwarding")
        raise typer.Exit(130) from None
