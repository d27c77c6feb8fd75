"""`corral agent`: the node agent that joins this machine to a control plane."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.output import CliError
from corral.cli.secrets import read_secret_file


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
            help="Join token (only needed on first join). Prefer --join-token-file: `ps` "
            "shows flags, and a process's environment can be read by others of its user.",
        ),
    ] = None,
    join_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CORRAL_JOIN_TOKEN_FILE",
            show_default=False,
            help="A file (mode 0600) holding the join token.",
        ),
    ] = None,
    isolation: Annotated[
        str,
        typer.Option(
            help="How replicas are confined: auto (per-workspace users and namespaces when "
            "the agent runs as root), user (that, or refuse to start), none.",
        ),
    ] = "auto",
    workload_uid_base: Annotated[
        int | None,
        typer.Option(
            help="Workspace N's replicas run as uid BASE+N, the same on every node "
            "(default 1000000).",
            min=1,
            show_default=False,
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
    volume_root: Annotated[
        Path | None,
        typer.Option(
            envvar="CORRAL_VOLUME_ROOT",
            help="Where workspace volumes and pods' files live on this node. On a fleet, a "
            "shared mount at the same path on every node. Default: STATE_DIR/volumes.",
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
        typer.Option(
            "--label",
            "-l",
            help="KEY=VALUE, repeatable. pool, instance-type, spot, price-per-hour and ssh-* "
            "are ignored here: only the join token sets them (join-token create --label).",
            show_default=False,
        ),
    ] = None,
    stop_replicas_on_exit: Annotated[
        bool, typer.Option("--stop-replicas-on-exit", hidden=True)
    ] = False,
    stop_grace: Annotated[float, typer.Option("--stop-grace", hidden=True)] = 5.0,
    health_interval: Annotated[
        float,
        typer.Option(
            "--health-interval",
            help="Seconds between GPU and node health checks (Xids are seen at once).",
        ),
    ] = 2.0,
    interruption_notices: Annotated[
        str | None,
        typer.Option(
            "--interruption-notices",
            help="Watch for the cloud's notice that it takes this machine back, and have the "
            "control plane drain the node in time: aws (EC2 spot, via the metadata service).",
            show_default=False,
        ),
    ] = None,
    imds_url: Annotated[
        str, typer.Option("--imds-url", envvar="CORRAL_IMDS_URL", hidden=True)
    ] = "http://169.254.169.254",
    interruption_poll: Annotated[float, typer.Option("--interruption-poll", hidden=True)] = 5.0,
) -> None:
    """Run the node agent (blocks). It dials out to the server; no inbound port is needed."""
    from corral.cli.config import state

    url = server_url or state(ctx).server
    if not url:
        raise CliError("give the control plane's address: corral agent --server URL", code=2)
    # node.json, assignments (with their env) and logs are the agent's user's alone; the
    # shim gives workloads the usual 022 back.
    os.umask(0o077)
    labels = parse_labels(label or [])
    secret = read_secret_file(join_token_file, "--join-token-file") if join_token_file else None
    # Read once; children (shims, workloads) must not inherit it.
    os.environ.pop("CORRAL_JOIN_TOKEN", None)
    fake = None if fake_gpus is None or fake_gpus.lower() == "none" else fake_gpus

    from corral.agent.config import AgentConfig
    from corral.agent.main import run_agent
    from corral.agent.sandbox.modes import DEFAULT_UID_BASE, IsolationMode

    try:
        mode = IsolationMode(isolation.lower())
    except ValueError:
        choices = ", ".join(m.value for m in IsolationMode)
        raise CliError(f"--isolation {isolation!r}: expected one of {choices}", code=2) from None

    cfg = AgentConfig(
        server=url.rstrip("/"),
        state_dir=(state_dir or state(ctx).home() / "agent").expanduser().resolve(),
        join_token=secret or join_token,
        name=name,
        fake_gpus=fake,
        address=address,
        labels=labels,
        stop_replicas_on_exit=stop_replicas_on_exit,
        stop_grace_s=stop_grace,
        health_interval_s=health_interval,
        isolation=mode,
        uid_base=workload_uid_base or DEFAULT_UID_BASE,
        volume_root=volume_root.expanduser().resolve() if volume_root else None,
        interruption_notices=interruption_notices.lower() if interruption_notices else None,
        imds_url=imds_url,
        interruption_poll_s=interruption_poll,
    )
    sys.exit(run_agent(cfg))
