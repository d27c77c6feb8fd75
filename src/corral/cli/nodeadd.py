"""`corral node add ssh://…`: hosts joined over SSH (targets: nodehosts.py; `corral node
remove`: noderemove.py).

add, per host (several in parallel, from --hosts FILE):

```
 connect -> check -> token (one-use join token) -> upload (bundle) -> install -> ready
```

The bundle comes from the control plane (GET /v1/agent/bundle, cached under
$CORRAL_HOME/bundles by its sha256) and goes to the host over the SSH connection: the host
needs no internet. Any failure leaves nothing behind: what was installed is stopped and
removed, a node that registered is deleted, and the join token is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli.config import state
from corral.cli.nodebundle import fetch_bundle
from corral.cli.nodehosts import AddOptions, parse_labels, targets
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, err, error_line, esc, note, out, table

if TYPE_CHECKING:
    from corral.client import Client
    from corral.providers.ssh import SshTarget
    from corral.providers.ssh_check import BundleMeta

DEFAULT_READY_TIMEOUT_S = 120.0
MAX_PARALLEL = 8
STEPS = ("connect", "check", "token", "upload", "install", "ready")


@dataclass
class AddResult:
    host: str
    node: str | None = None
    error: str | None = None
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    total_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "node": self.node,
            "ok": self.error is None,
            "error": self.error,
            "steps": {k: round(v, 3) for k, v in self.steps.items()},
            "total_s": round(self.total_s, 3),
        }


class _Reporter:
    """Progress lines: `HOST: step ... ok (1.2 s)`, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def line(self, host: str, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            err().print(f"[dim]{esc(host)}:[/] {text}")
        else:
            print(f"{host}: {_plain(text)}", file=sys.stderr, flush=True)


def _plain(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain


async def _add_one(
    target: SshTarget,
    options: AddOptions,
    client_factory: Callable[[], Client],
    bundle: tuple[Path, BundleMeta],
    report: _Reporter,
    claimed: set[str],
) -> AddResult:
    from corral.providers import ssh, ssh_check
    from corral.providers.base import JoinInfo
    from corral.providers.install import install_script

    result = AddResult(host=str(target), node=options.name)
    started = time.monotonic()
    token_name: str | None = None
    installed = False
    registered = False
    conn = None
    facts = None
    step = "connect"
    client = client_factory()
    t0 = time.monotonic()

    def done(name: str, detail: str = "") -> None:
        nonlocal t0
        result.steps[name] = time.monotonic() - t0
        extra = f" {esc(detail)}" if detail else ""
        report.line(result.host, f"{name} [green]ok[/]{extra} ({result.steps[name]:.1f} s)")
        t0 = time.monotonic()

    try:
        conn = await ssh.connect(target, options.key, known_hosts=options.known_hosts)
        done("connect", f"host key {ssh.host_key_fingerprint(conn)}")
        step = "check"
        facts = await ssh_check.check(
            conn, bundle[1], options.install_dir, options.python, options.require_gpus
        )
        node = options.name or await _hostname(conn) or target.host
        result.node = node
        taken = await asyncio.to_thread(lambda: {n.name for n in client.list_nodes()})
        if node in taken or node in claimed:
            raise ssh.StepFailed(
                "check",
                f"a node named {node} already exists",
                "give --name (name= in a hosts file), or `corral node remove` the old one",
            )
        claimed.add(node)
        gpus = f", {len(facts.gpus)} GPU(s)" if facts.gpus else ""
        done("check", f"{facts.distro or facts.os} {facts.arch}, Python {facts.python}{gpus}")
        step = "token"
        token_name = f"node-add-{secrets.token_hex(6)}"
        # The server gives the node these labels (it cannot set provider, pool or ssh-*
        # itself): `node remove` SSHes where they say.
        labels = {**options.labels, **target.labels(options.install_dir)}
        made = await asyncio.to_thread(
            client.create_join_token, token_name, options.ready_timeout + 600, 1, labels
        )
        assert made.token is not None
        done("token")
        step = "upload"
        remote = await ssh.upload(conn, bundle[0], lambda _s, _m: None)
        done("upload", f"{bundle[1].bytes / 2**20:.0f} MB")
        step = "install"
        join = JoinInfo(options.agent_server, made.token, node, labels)
        script = install_script(
            join,
            options.install_dir,
            remote,
            ("--address", target.host, *options.agent_args),
            use_systemd=facts.systemd,
        )
        installed = True
        await ssh.install(conn, facts, script, remote)
        done("install", "systemd unit" if facts.systemd else "supervised process")
        step = "ready"
        registered = await _wait_ready(client, node, options.ready_timeout)
        if not registered:
            tail = await ssh.agent_log_tail(conn, options.install_dir, facts.sudo)
            last = tail.splitlines()[-1] if tail else "(no log)"
            raise ssh.StepFailed(
                "ready",
                f"node {node} not ready within {options.ready_timeout:g} s; the agent's "
                f"log ends: {last[:200]}",
                f"see {options.install_dir}/agent.log on the host",
            )
        done("ready")
    except ssh.StepFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # the API said no (a CliError, a ClientError), or our bug
        result.error = f"step {step}: {_describe(exc)}"
    finally:
        if result.error is not None:
            await _undo(client, conn, facts, options, result, token_name, installed)
        elif token_name is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.revoke_join_token, token_name)
        if conn is not None:
            conn.close()
        with contextlib.suppress(Exception):
            client.close()
    result.total_s = time.monotonic() - started
    return result


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message).splitlines()[0]


async def _hostname(conn: Any) -> str | None:
    from corral.providers import ssh

    status, stdout, _ = await ssh.run(conn, "check", "hostname")
    name = stdout.strip().split(".")[0]
    return name if status == 0 and name else None


async def _wait_ready(client: Client, node: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = await asyncio.to_thread(client.list_nodes)
        if any(n.name == node and n.condition == "ready" and n.connected for n in nodes):
            return True
        await asyncio.sleep(0.25)
    return False


async def _undo(
    client: Client,
    conn: Any,
    facts: Any,
    options: AddOptions,
    result: AddResult,
    token_name: str | None,
    installed: bool,
) -> None:
    """Leave nothing half-made: revoke the token, stop and remove the agent, delete a node
    that registered. A failure here is added to the error line, not raised."""
    from corral.providers import ssh

    problems = []
    if token_name is not None:
        try:
            await asyncio.to_thread(client.revoke_join_token, token_name)
        except Exception as exc:
            problems.append(f"revoking join token {token_name}: {_describe(exc)}")
    if installed and conn is not None:
        try:
            await ssh.uninstall(conn, options.install_dir, facts.sudo if facts else "")
        except ssh.StepFailed as exc:
            problems.append(str(exc))
    if token_name is not None and result.node is not None:
        try:
            nodes = await asyncio.to_thread(client.list_nodes)
            if any(n.name == result.node and "ssh-host" in n.labels for n in nodes):
                await asyncio.to_thread(client.delete_node, result.node)
        except Exception as exc:
            problems.append(f"deleting node {result.node}: {_describe(exc)}")
    if problems:
        result.error = f"{result.error}; cleanup: {'; '.join(problems)}"


async def _add_all(
    hosts: list[tuple[SshTarget, AddOptions]],
    client_factory: Callable[[], Client],
    bundle: tuple[Path, BundleMeta],
    report: _Reporter,
) -> list[AddResult]:
    limit = asyncio.Semaphore(MAX_PARALLEL)
    claimed: set[str] = set()  # node names taken by hosts of this same run

    async def one(target: SshTarget, options: AddOptions) -> AddResult:
        async with limit:
            return await _add_one(target, options, client_factory, bundle, report, claimed)

    return list(await asyncio.gather(*(one(t, o) for t, o in hosts)))


def add(
    ctx: typer.Context,
    hosts: Annotated[
        list[str] | None,
        typer.Argument(help="ssh://user@host[:port], one or more.", show_default=False),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="Private key (default: the ssh agent and ~/.ssh).", show_default=False),
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(
            help="known_hosts to check host keys in (default: ~/.ssh/known_hosts): a host "
            "it lists must show that key; one it does not is accepted and its key written "
            "there (`node remove` then accepts only that key).",
            show_default=False,
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", "-l", help="KEY=VALUE for the node, repeatable.", show_default=False
        ),
    ] = None,
    rack: Annotated[
        str | None, typer.Option(help="The host's rack (label rack=R).", show_default=False)
    ] = None,
    pool: Annotated[
        str | None, typer.Option(help="A static pool to put it in.", show_default=False)
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Node name (default: the host's hostname).", show_default=False),
    ] = None,
    install_dir: Annotated[
        str, typer.Option(help="Where the agent goes on the host.")
    ] = "/opt/corral",
    python: Annotated[
        str, typer.Option(help="The host's Python (same version as the control plane's).")
    ] = "python3",
    gpus: Annotated[
        bool, typer.Option("--gpus", help="Require GPUs: fail when nvidia-smi lists none.")
    ] = False,
    hosts_file: Annotated[
        Path | None,
        typer.Option(
            "--hosts",
            help="A file of hosts, one a line: ssh://user@host[:port] [name=N] [rack=R] "
            "[install-dir=D] [KEY=VALUE (labels)]...; # comments.",
            show_default=False,
        ),
    ] = None,
    agent_server: Annotated[
        str | None,
        typer.Option(
            help="The control plane's URL as the hosts reach it (default: this CLI's server).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each node to be ready.", min=1)
    ] = DEFAULT_READY_TIMEOUT_S,
    fake_gpus: Annotated[str | None, typer.Option(hidden=True)] = None,
    agent_arg: Annotated[list[str] | None, typer.Option(hidden=True)] = None,
    json_: JsonOpt = False,
) -> None:
    """Install the agent on hosts over SSH and join them (cluster admins). The hosts need
    SSH, Python (the control plane's version) and tar; nothing is downloaded there."""
    if not install_dir.startswith("/") or install_dir.rstrip("/") == "":
        raise CliError(f"--install-dir {install_dir!r}: expected an absolute directory", code=2)
    labels = parse_labels(label or [])
    if rack:
        labels["rack"] = rack
    if pool:
        labels["pool"] = pool
    args = list(agent_arg or [])
    if fake_gpus:
        args += ["--fake-gpus", fake_gpus]
    cli = state(ctx)
    settings = cli.settings()
    server = agent_server or settings.server or ""
    options = AddOptions(
        key=key.expanduser() if key else None,
        known_hosts=known_hosts.expanduser() if known_hosts else None,
        labels=labels,
        name=name,
        install_dir=install_dir.rstrip("/"),
        python=python,
        require_gpus=gpus,
        agent_server=server.rstrip("/"),
        agent_args=tuple(args),
        ready_timeout=timeout,
    )
    # Every target parsed (a bad one: exit 2) before anything is downloaded or made.
    per_host = targets(list(hosts or []), hosts_file, options)
    if name is not None and len(per_host) > 1:
        raise CliError("--name names one node: give one host with it", code=2)
    report = _Reporter(quiet=json_)
    t0 = time.monotonic()
    bundle = fetch_bundle(settings, cli.home())
    fetched = time.monotonic() - t0
    results = asyncio.run(_add_all(per_host, cli.client, bundle, report))
    for r in results:
        r.steps = {"bundle": fetched, **r.steps}
    failed = [r for r in results if r.error]
    if json_:
        print(json.dumps({"nodes": [r.as_json() for r in results]}, indent=2))
    else:
        for r in failed:
            error_line(f"{r.host}: {r.error}")
        if len(results) > 1:
            summary = table("HOST", "NODE", "RESULT", "TIME")
            for r in results:
                result = "ok" if not r.error else "failed"
                summary.add_row(esc(r.host), esc(r.node or "-"), result, f"{r.total_s:.1f} s")
            out().print(summary)
        for r in results:
            if not r.error:
                note(f"node [bold]{esc(r.node)}[/] is ready ({r.total_s:.1f} s)")
    if failed:
        raise typer.Exit(1)
