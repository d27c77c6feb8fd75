"""`corral console`: where the web console is, and the token to log in with."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.output import CliError, esc, out

CONSOLE_PATH = "/ui/"


def console_url(server: str) -> str:
    return server.rstrip("/") + CONSOLE_PATH


def console(
    ctx: typer.Context,
    show_token: Annotated[
        bool,
        typer.Option("--show-token", help="Also print this CLI's token, to paste at the login."),
    ] = False,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the console in the default browser.")
    ] = False,
) -> None:
    """Print the web console's address (served by the control plane, same port, same tokens)."""
    settings = state(ctx).settings()
    if not settings.server:
        raise CliError("no server configured: run `corral up`, or set CORRAL_SERVER", code=2)
    url = console_url(settings.server)
    out().print(f"console  {esc(url)}", highlight=False)
    if show_token:
        if not settings.token:
            raise CliError("no token configured: set CORRAL_TOKEN or run `corral up`", code=2)
        out().print(f"token    {esc(settings.token)}", highlight=False)
    else:
        out().print("log in with an API token (`corral console --show-token` prints this CLI's)")
    if open_ and not webbrowser.open(url):
        raise CliError(f"no browser could be opened here: open {url} yourself")
