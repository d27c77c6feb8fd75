"""`corral ssh-key`: the public keys that may open sessions into the workspace's pods and
replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt, WorkspaceOpt
from corral.cli.output import CliError, age, err, esc, out, print_page, table

app = typer.Typer(
    cls=LightGroup,
    help="SSH public keys allowed into the workspace's pods (and job replicas).",
    no_args_is_help=True,
)

_MAX_KEY_BYTES = 16 * 1024


def read_public_key(path: Path) -> str:
    """The one OpenSSH public key line in `path`; a clear error for a private key, a
    missing file, or anything else."""
    try:
        raw = path.read_bytes()[: _MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", code=2) from None
    text = raw.decode("utf-8", "replace")
    if "PRIVATE KEY" in text:
        pub = path.with_name(path.name + ".pub")
        raise CliError(
            f"{path} is a PRIVATE key: never share it; give the public key instead",
            code=2,
            hint=f"corral ssh-key add {pub}" if pub.exists() else "the public key ends in .pub",
        )
    if len(raw) > _MAX_KEY_BYTES:
        raise CliError(
            f"{path}: too large for a public key ({_MAX_KEY_BYTES // 1024} KiB max)", code=2
        )
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    if len(lines) != 1:
        raise CliError(
            f"{path}: expected one OpenSSH public key line (ssh-ed25519 AAAA...), "
            f"found {len(lines)} lines",
            code=2,
        )
    import asyncssh

    try:
        asyncssh.import_public_key(lines[0])
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise CliError(
            f"{path}: not an OpenSSH public key ({exc}); "
            "expected e.g. ssh-ed25519 AAAA... you@host",
            code=2,
        ) from None
    return lines[0]


@app.command("add")
def add(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A public key file, e.g. ~/.ssh/id_ed25519.pub.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The key's name (default: the file's name).", show_default=False
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a public key: its holder can then ssh into the workspace's pods."""
    public_key = read_public_key(path.expanduser())
    key_name = name or path.name.removesuffix(".pub").replace("_", "-").replace(".", "-").lower()
    with state(ctx).client(workspace) as client:
        key = client.add_ssh_key(key_name, public_key)
    err().print(
        f"added ssh key [bold]{esc(key.name)}[/] ({esc(key.fingerprint)}) "
        f"to workspace {esc(key.workspace)}"
    )


@app.command("ls")
def ls(ctx: typer.Context, workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    """List the workspace's SSH keys."""
    from corral.wire.pods import SshKeyList

    with state(ctx).client(workspace) as client:
        keys = client.list_ssh_keys()
    if json_:
        print_page(SshKeyList(keys=keys))
        return
    t = table("NAME", "FINGERPRINT", "ADDED BY", "ADDED")
    for key in keys:
        t.add_row(esc(key.name), esc(key.fingerprint), esc(key.added_by), age(key.created_at))
    out().print(t)


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name (see `corral ssh-key ls`).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Remove a key: new sessions with it are refused."""
    with state(ctx).client(workspace) as client:
        client.delete_ssh_key(name)
    err().print(f"removed ssh key [bold]{esc(name)}[/]")
