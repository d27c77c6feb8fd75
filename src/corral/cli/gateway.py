"""`corral gateway`: the inference data plane, in the foreground."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.client import Client

DEFAULT_PORT = 8080


def gateway(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Control plane URL. Default: the configured one (--server before the "
            "command, CORRAL_SERVER, config.json).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="A cluster-admin token. Default: CORRAL_TOKEN, else config.json (`corral up` "
            "writes an admin token there); prefer those, as `ps` shows this flag.",
            show_default=False,
        ),
    ] = None,
    gateway_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="This gateway's name in load reports (default: hostname).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the gateway (blocks; SIGTERM drains open requests, then stops it).

    It routes http://HOST:PORT/ep/NAME/… to the ready replicas of endpoint NAME, following the
    control plane's route table and reporting load to it. Run more than one behind a load
    balancer if one is not enough.
    """
    import logging

    from corral.cli.config import state

    st = state(ctx)
    settings = st.settings()
    url = (server_url or settings.server).rstrip("/")
    secret = token or settings.token
    if not secret:
        raise CliError(
            "the gateway needs a cluster-admin token",
            code=2,
            hint="set CORRAL_TOKEN, or run it where `corral up` wrote config.json",
        )
    from corral.client import Settings

    with st.deps.client_factory(Settings(url, secret, settings.workspace)) as client:
        _check_token(client)

    from corral.gateway import run_gateway

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise
    run_gateway(port, url, host=host, token=secret, gateway_id=gateway_id)


def _check_token(client: Client) -> None:
    """Refuse a token the control plane rejects or that is not a cluster admin's; a server
    that is not up yet is fine (the gateway keeps asking for routes until it is)."""
    from corral.cli.output import warn
    from corral.client import CorralError, Unauthorized

    try:
        me = client.whoami()
    except Unauthorized:
        raise CliError(
            f"the control plane at {client.server} rejected the token",
            hint="give a cluster-admin token (CORRAL_TOKEN or --token)",
        ) from None
    except CorralError as exc:
        warn(f"{exc}; the gateway serves no routes until the control plane answers")
        return
    if me.role != "admin" or me.workspace is not None:
        scope = f"workspace {me.workspace}" if me.workspace else "the cluster"
        raise CliError(
            f"the gateway needs a cluster-admin token; this one is {me.role} of {scope}",
            hint="use a cluster admin's token (`corral up` writes one to config.json)",
        )
