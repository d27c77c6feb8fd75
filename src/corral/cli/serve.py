"""`corral serve`: run a corral.serve app on this machine, as `--app` runs it on the fleet."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.output import CliError


def serve(
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE.py:Class",
            help="The class to serve: app.py:Embedder, or package.module:Embedder.",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
) -> None:
    """Serve a Python class over HTTP locally (blocks; Ctrl-C stops it).

    Its decorated handler methods become routes; try it here, then put the same class on
    the fleet with [bold]corral endpoint deploy NAME --app FILE.py:Class[/].
    """
    from corral.serve.run import TargetError, serve_app

    try:
        serve_app(target, host, port)
    except TargetError as exc:
        raise CliError(str(exc), code=2) from None
