"""`corral gateway`: the inference data plane, in the foreground."""

from __future__ import annotations

import os
from pathlib import Path
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
            help="A cluster-admin token. Default: --token-file, else CORRAL_TOKEN, else "
            "config.json (`corral up` writes an admin token there); prefer those, as `ps` "
            "shows this flag.",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file (mode 0600) holding a cluster-admin token. Default: CORRAL_TOKEN_FILE.",
            show_default=False,
        ),
    ] = None,
    # Defaults live in corral.gateway.limits, not imported here: `corral --help` stays light.
    max_header_bytes: Annotated[
        int | None,
        typer.Option(
            help="Largest request head accepted, in bytes (431 above). Default: 65536.",
            min=1024,
            show_default=False,
        ),
    ] = None,
    max_headers: Annotated[
        int | None,
        typer.Option(
            help="Most header fields in one request (431 above). Default: 100.",
            min=1,
            show_default=False,
        ),
    ] = None,
    head_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a client may take to send a request head (408 after). Default: 20.",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    trusted_proxies: Annotated[
        str,
        typer.Option(
            help="CIDR,... of proxies in front of the gateway whose X-Forwarded-For is kept "
            "(default: none; clients' forwarding headers are replaced).",
            show_default=False,
        ),
    ] = "",
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file (mode 0600) with a token that may read /_corral/load and "
            "/_corral/metrics (the admin token always may).",
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
    from corral.gateway import run_gateway
    from corral.gateway.forwarding import parse_trusted
    from corral.gateway.limits import HeadLimits
    from corral.gateway.main import EdgeOptions
    from corral.gateway.tokenfile import TokenFileError, read_token_file

    # Nothing this process writes is for other users' eyes.
    os.umask(0o077)
    st = state(ctx)
    settings = st.settings()
    url = (server_url or settings.server).rstrip("/")
    try:
        secret = _admin_token(token, token_file, settings.token)
        if metrics_token_file is not None:
            read_token_file(metrics_token_file)  # refused here, before anything starts
        limits = HeadLimits.of(max_header_bytes, max_headers, head_timeout)
        proxies = parse_trusted(trusted_proxies)
    except (TokenFileError, ValueError) as exc:
        raise CliError(str(exc), code=2) from None
    from corral.client import Settings

    with st.deps.client_factory(Settings(url, secret, settings.workspace)) as client:
        _check_token(client)

    edge = EdgeOptions(limits, proxies, metrics_token_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise
    run_gateway(port, url, host=host, token=secret, gateway_id=gateway_id, edge=edge)


def _admin_token(token: str | None, token_file: Path | None, configured: str | None) -> str:
    """--token, else --token-file (or CORRAL_TOKEN_FILE's), else CORRAL_TOKEN or config.json.

    CORRAL_TOKEN leaves this process's environment here: children must not inherit it.
    """
    from corral.gateway.tokenfile import TOKEN_FILE_ENV, read_token_file, take_env_token

    take_env_token()  # `configured` already holds it when it was set
    if token and token_file:
        raise CliError("give --token or --token-file, not both", code=2)
    if token_file is None and not token and os.environ.get(TOKEN_FILE_ENV):
        token_file = Path(os.environ[TOKEN_FILE_ENV])
    secret = token or (read_token_file(token_file) if token_file else configured)
    if not secret:
        raise CliError(
            "the gateway needs a cluster-admin token",
            code=2,
            hint="give --token-file FILE, or run it where `corral up` wrote config.json",
        )
    return secret


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
            hint="give a cluster-admin token (--token-file, CORRAL_TOKEN or --token)",
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
