"""`corral server`: the control plane, in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_PORT = 7390


def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = DEFAULT_PORT,
    home: Annotated[
        Path | None,
        typer.Option(
            help="State directory (database, logs). Default: $CORRAL_HOME or ~/.corral.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the corral API server and controllers (blocks; Ctrl-C stops it).

    CORRAL_DATABASE_URL selects PostgreSQL; CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE and
    CORRAL_BOOTSTRAP_JOIN_TOKEN_FILE name 0600 files whose tokens seed the first tokens (as
    `corral up` does; CORRAL_BOOTSTRAP_ADMIN_TOKEN and _JOIN_TOKEN work too, but any process
    of the same user can read a process's environment).
    """
    from corral.cli.config import state
    from corral.cli.output import CliError
    from corral.server.config import ServerOptions, SettingError
    from corral.server.main import serve

    home = (home or state(ctx).home()).expanduser().resolve()
    # from_env: the bootstrap tokens and tuning variables come from the environment.
    try:
        serve(ServerOptions.from_env(host=host, port=port, home=home))
    except SettingError as exc:  # a token or key file that cannot be used, named
        raise CliError(str(exc), code=2) from None
