"""`corral agent`: the node agent that joins this machine to a control plane."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.output import CliError


def parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label {item!r}: expected KEY=VALUE, e.g. --label rack=r12", code=2)
        labels[key] = value
    return labels


def agent(
    ctx: typer.Context,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="CORRAL_SERVER",
            show_default=False,
            help="Control plane URL, e.g. https://corral.example.com.",
        ),
    ] = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            envvar="CORRAL_JOIN_TOKEN",
            show_default=False,
            help="Join token (`corral up` prints one; only needed on first join).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Node name (default: the hostname).", show_default=False)
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the node keeps its identity and replicas. Default: $CORRAL_HOME/agent.",
            show_default=False,
        ),
    ] = None,
    fake_gpus: Annotated[
        str | None,
        typer.Option(
            help="Pretend to have GPUs, e.g. H100:8 (for trying corral without any).",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Address other nodes reach this one at (MASTER_ADDR).", show_default=False
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=VALUE, repeatable.", show_default=False),
    ] = None,
    stop_replicas_on_exit: Annotated[
        bool, typer.Option("--stop-replicas-on-exit", hidden=True)
    ] = False,
    stop_grace: Annotated[float, typer.Option("--stop-grace", hidden=True)] = 5.0,
) -> None:
    """Run the node agent (blocks). It dials out to the server; no inbound port is needed."""
    from corral.cli.config import state

    url = server_url or state(ctx).server
    if not url:
        raise CliError("give the control plane's address: corral agent --server URL", code=2)
    labels = parse_labels(label or [])
    fake = None if fake_gpus is None or fake_gpus.lower() == "none" else fake_gpus

    from corral.agent.config import AgentConfig
    from corral.agent.main import run_agent

    cfg = AgentConfig(
        server=url.rstrip("/"),
        state_dir=(state_dir or state(ctx).home() / "agent").expanduser().resolve(),
        join_token=join_token,
        name=name,
        fake_gpus=fake,
        address=address,
        labels=labels,
        stop_replicas_on_exit=stop_replicas_on_exit,
        stop_grace_s=stop_grace,
    )
    sys.exit(run_agent(cfg))
