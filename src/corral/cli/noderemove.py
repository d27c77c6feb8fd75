"""`corral node remove NODE`: drain it, uninstall the agent `node add` put on its host over
SSH, delete it. Where the agent is comes from the node's ssh-* labels, which the server set
from `node add`'s join token (a node cannot change them); the host key must be the one
known_hosts pinned when it was added."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.config import state
from corral.cli.output import CliError, error_line, esc, note


def remove(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The node's name.")],
    key: Annotated[
        Path | None,
        typer.Option(help="Private key (default: the ssh agent and ~/.ssh).", show_default=False),
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(
            help="The known_hosts that lists the host's key (default: ~/.ssh/known_hosts, "
            "where `node add` recorded it).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove even if its work does not leave in time or the host cannot be "
            "reached (the agent may be left there).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for its work to leave.", min=1)
    ] = 300.0,
) -> None:
    """Drain NODE, stop and uninstall its agent over SSH (nodes added with `node add`),
    and delete it (cluster admins). A pool's cloud nodes go with `corral pool scale`."""
    from corral.providers import ssh

    cli = state(ctx)
    with cli.client() as client:
        detail = client.get_node(node)
        labels = detail.node.labels
        pool, provider = labels.get("pool"), labels.get("provider")
        if pool and provider != "ssh":
            raise CliError(
                f"{node}: is a machine of pool {pool} (provider {provider or 'unknown'}): the "
                f"pool launches and releases it; lower the pool with `corral pool scale {pool} "
                "--max N` (or `corral pool delete`)",
                code=2,
            )
        where = ssh.SshTarget.from_labels(labels)
        if detail.workloads:
            client.drain_node(node)
            note(f"draining {esc(node)}: {len(detail.workloads)} workload(s)")
        deadline = time.monotonic() + timeout
        while client.get_node(node).workloads:
            if time.monotonic() > deadline:
                if not force:
                    raise CliError(
                        f"{node}: step drain: its work did not leave within {timeout:g} s "
                        "(wait longer with --timeout, or --force)"
                    )
                break
            time.sleep(0.5)
        if where is not None:
            target, install_dir = where
            try:
                asyncio.run(
                    ssh.remove_agent(
                        target,
                        install_dir,
                        key.expanduser() if key else None,
                        known_hosts.expanduser() if known_hosts else None,
                    )
                )
            except ssh.StepFailed as exc:
                if not force:
                    raise CliError(
                        f"{node}: {exc}", hint="--force deletes the node anyway"
                    ) from None
                error_line(f"{node}: {exc} (deleting the node anyway: --force)")
            else:
                note(f"stopped and removed the agent in {esc(install_dir)} on {esc(target)}")
        else:
            note(f"{esc(node)} was not added over ssh: its agent is left as it is")
        client.delete_node(node)
    note(f"removed node [bold]{esc(node)}[/]")
