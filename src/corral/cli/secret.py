"""`corral secret`: workspace secrets, given to jobs and endpoints as environment variables.

A value is read from stdin or a file, never from the command line: every user of the
machine can read a process's argv (`ps`), and shells keep it in their history.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.light import LightGroup
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, age, err, esc, out, print_page, table

app = typer.Typer(
    cls=LightGroup,
    help="Workspace secrets: stored encrypted, given to replicas as environment variables "
    "(`secrets: {HF_TOKEN: hf-token}` in a spec), never shown again.",
    no_args_is_help=True,
)


def _read_value(name: str, from_file: Path | None) -> str:
    from corral.wire.api import MAX_SECRET_BYTES

    if from_file is not None:
        try:
            with from_file.open("rb") as f:
                raw = f.read(MAX_SECRET_BYTES + 2)
        except OSError as exc:
            raise CliError(f"--from-file {from_file}: {exc.strerror or exc}", code=2) from None
        where = f"--from-file {from_file}"
    else:
        if sys.stdin.isatty():
            import getpass

            # Typed at a terminal: not echoed, not in the shell's history.
            raw = getpass.getpass(f"value of secret {name}: ").encode("utf-8")
        else:
            raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 2)
        where = "stdin"
    # One trailing newline is the `echo` or the editor's, not the secret's.
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not raw:
        raise CliError(f"{where}: the value is empty; nothing was set", code=2)
    if len(raw) > MAX_SECRET_BYTES:
        raise CliError(f"{where}: a secret is at most {MAX_SECRET_BYTES // 1024} KiB", code=2)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{where}: the value is not UTF-8 text", code=2) from None


@app.command("set")
def set_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The secret's name, e.g. hf-token.")],
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Read the value from this file (default: stdin). One trailing newline is dropped.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or replace a secret; its value comes from stdin or --from-file.

    echo -n "$TOKEN" | corral secret set hf-token, or corral secret set hf-token
    --from-file token.txt. Replicas that start later get the new value.
    """
    value = _read_value(name, from_file)
    with state(ctx).client() as client:
        _, created = client.set_secret(name, value)
    err().print(f"{'created' if created else 'replaced'} secret [bold]{esc(name)}[/]")


@app.command("ls")
def ls(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """List the workspace's secrets: names and times, never values."""
    from corral.wire.api import SecretList

    with state(ctx).client() as client:
        secrets = client.list_secrets()
    if json_:
        print_page(SecretList(secrets=secrets))
        return
    t = table("NAME", "CREATED", "UPDATED")
    for secret in secrets:
        t.add_row(esc(secret.name), age(secret.created_at), age(secret.updated_at))
    out().print(t)


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The secret's name (see `corral secret ls`).")],
) -> None:
    """Delete a secret (refused while a live job or endpoint uses it)."""
    with state(ctx).client() as client:
        client.delete_secret(name)
    err().print(f"deleted secret [bold]{esc(name)}[/]")
