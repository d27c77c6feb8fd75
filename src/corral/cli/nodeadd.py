"""`corral node add ssh://…` and `corral node remove`: hosts joined and removed over SSH.

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
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli.config import state
from corral.cli.options import JsonOpt
from corral.cli.output import CliError, err, error_line, esc, note, out, table

if TYPE_CHECKING:
    from corral.client import Client, Settings
    from corral.providers.ssh import BundleMeta

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


@dataclass(frozen=True)
class AddOptions:
    key: Path | None
    known_hosts: Path | None
    labels: dict[str, str]
    name: str | None
    install_dir: str
    python: str
    require_gpus: bool
    agent_server: str
    agent_args: tuple[str, ...]
    ready_timeout: float


def _read_hosts(path: Path) -> list[tuple[str, dict[str, str]]]:
    """(url, fields) per line: `ssh://user@host[:port] [name=N] [rack=R] [install-dir=D]
    [KEY=VALUE]...` (other KEY=VALUE are labels); `#` starts a comment."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"--hosts {path}: {exc.strerror or exc}", code=2) from None
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        fields = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise CliError(
                    f"--hosts {path}:{number}: {word!r}: expected KEY=VALUE after the URL "
                    "(name=, rack=, install-dir= or a label)",
                    code=2,
                )
            fields[key] = value
        hosts.append((words[0], fields))
    if not hosts:
        raise CliError(f"--hosts {path}: no hosts in it (one ssh://user@host per line)", code=2)
    return hosts


def _for_host(options: AddOptions, fields: dict[str, str]) -> AddOptions:
    """`options` with one hosts-file line's own name, rack, install dir and labels."""
    if not fields:
        return options
    rest = dict(fields)
    name = rest.pop("name", None) or options.name
    install_dir = (rest.pop("install-dir", None) or options.install_dir).rstrip("/")
    if not install_dir.startswith("/"):
        raise CliError(f"install-dir={install_dir!r}: expected an absolute directory", code=2)
    labels = {**options.labels, **_parse_labels([f"{k}={v}" for k, v in rest.items()])}
    return replace(options, name=name, install_dir=install_dir, labels=labels)


def _fetch_bundle(settings: Settings, home: Path) -> tuple[Path, BundleMeta]:
    """The control plane's agent bundle, downloaded once into home/bundles."""
    import httpx

    from corral.providers.ssh import BundleMeta

    server = (settings.server or "").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    try:
        with httpx.Client(base_url=server, headers=headers, timeout=300) as http:
            answer = http.get("/v1/agent/bundle/info")
            if answer.status_code != 200:
                raise CliError(_http_error("bundle", answer), code=1)
            info = answer.json()
            meta = BundleMeta(
                info["python"], info["implementation"], info["platform"], int(info["bytes"])
            )
            directory = home / "bundles"
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{info['sha256']}.tar.gz"
            if path.is_file():
                return path, meta
            tmp = directory / f".{info['sha256']}.{secrets.token_hex(4)}"
            digest = hashlib.sha256()
            with http.stream("GET", "/v1/agent/bundle") as body, tmp.open("wb") as f:
                if body.status_code != 200:
                    body.read()
                    raise CliError(_http_error("bundle", body), code=1)
                for chunk in body.iter_bytes(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != info["sha256"]:
                tmp.unlink(missing_ok=True)
                raise CliError("step bundle: the download's sha256 does not match; try again")
            tmp.replace(path)
            return path, meta
    except httpx.HTTPError as exc:
        raise CliError(
            f"step bundle: cannot download the agent bundle from {server}: {exc}"
        ) from None


def _http_error(step: str, answer: Any) -> str:
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {answer.status_code}"
    return f"step {step}: the control plane answered: {message}"


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
    url: str,
    options: AddOptions,
    client_factory: Callable[[], Client],
    bundle: tuple[Path, BundleMeta],
    report: _Reporter,
    claimed: set[str],
) -> AddResult:
    from corral.providers import ssh
    from corral.providers.base import JoinInfo
    from corral.providers.install import install_script

    result = AddResult(host=url, node=options.name)
    started = time.monotonic()
    try:
        target = ssh.SshTarget.parse(url)
    except ValueError as exc:
        result.error = f"step connect: {exc}"
        return result
    result.host = str(target)
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
        facts = await ssh.check(
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
        made = await asyncio.to_thread(
            client.create_join_token, token_name, options.ready_timeout + 600, 1
        )
        assert made.token is not None
        done("token")
        step = "upload"
        remote = await ssh.upload(conn, bundle[0], lambda _s, _m: None)
        done("upload", f"{bundle[1].bytes / 2**20:.0f} MB")
        step = "install"
        labels = {**options.labels, **target.labels(options.install_dir)}
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
    hosts: list[tuple[str, AddOptions]],
    client_factory: Callable[[], Client],
    bundle: tuple[Path, BundleMeta],
    report: _Reporter,
) -> list[AddResult]:
    limit = asyncio.Semaphore(MAX_PARALLEL)
    claimed: set[str] = set()  # node names taken by hosts of this same run

    async def one(url: str, options: AddOptions) -> AddResult:
        async with limit:
            return await _add_one(url, options, client_factory, bundle, report, claimed)

    return list(await asyncio.gather(*(one(u, o) for u, o in hosts)))


def _parse_labels(items: list[str]) -> dict[str, str]:
    from corral.cli.agent import parse_labels
    from corral.providers.ssh import LABEL_DIR, LABEL_HOST, LABEL_PORT, LABEL_USER

    labels = parse_labels(items)
    for key in ("provider", LABEL_HOST, LABEL_PORT, LABEL_USER, LABEL_DIR):
        if key in labels:
            raise CliError(f"--label {key}: set by node add itself; drop it", code=2)
    return labels


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
            help="Accept only host keys listed here (default: ~/.ssh/known_hosts for the "
            "hosts it lists; a host it does not list is accepted, its key printed).",
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
    urls: list[tuple[str, dict[str, str]]] = [(h, {}) for h in hosts or []]
    urls += _read_hosts(hosts_file) if hosts_file else []
    if not urls:
        raise CliError("give a host: corral node add ssh://user@host (or --hosts FILE)", code=2)
    if name is not None and len(urls) > 1:
        raise CliError("--name names one node: give one host with it", code=2)
    if not install_dir.startswith("/") or install_dir.rstrip("/") == "":
        raise CliError(f"--install-dir {install_dir!r}: expected an absolute directory", code=2)
    labels = _parse_labels(label or [])
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
    report = _Reporter(quiet=json_)
    t0 = time.monotonic()
    bundle = _fetch_bundle(settings, cli.home())
    fetched = time.monotonic() - t0
    per_host = [(url, _for_host(options, fields)) for url, fields in urls]
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


def remove(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The node's name.")],
    key: Annotated[
        Path | None,
        typer.Option(help="Private key (default: the ssh agent and ~/.ssh).", show_default=False),
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
    and delete it (cluster admins)."""
    from corral.providers import ssh

    cli = state(ctx)
    with cli.client() as client:
        detail = client.get_node(node)
        where = ssh.SshTarget.from_labels(detail.node.labels)
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
                asyncio.run(ssh._remove(target, install_dir, key.expanduser() if key else None))
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
