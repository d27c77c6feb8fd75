"""`corral node add`'s targets: ssh:// URLs and --hosts FILE lines, all parsed (and each
bad one refused, exit 2) before anything is downloaded, connected or made."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.providers.ssh import SshTarget


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


def parse_labels(items: list[str], flag: str = "--label") -> dict[str, str]:
    """KEY=VALUE labels; the ones `node add` sets itself (provider, ssh-*) are refused."""
    from corral.cli.agent import parse_labels as agent_labels
    from corral.providers.ssh import LABEL_DIR, LABEL_HOST, LABEL_PORT, LABEL_USER

    labels = agent_labels(items)
    for key in ("provider", LABEL_HOST, LABEL_PORT, LABEL_USER, LABEL_DIR):
        if key in labels:
            raise CliError(f"{flag} {key}: set by node add itself; drop it", code=2)
    return labels


def targets(
    urls: list[str], hosts_file: Path | None, options: AddOptions
) -> list[tuple[SshTarget, AddOptions]]:
    """Every host to add with its own options: the URLs given, then the file's lines."""
    from corral.providers.ssh import SshTarget

    found: list[tuple[SshTarget, AddOptions]] = []
    for url in urls:
        try:
            found.append((SshTarget.parse(url), options))
        except ValueError as exc:
            raise CliError(f"host {exc}", code=2) from None
    if hosts_file is not None:
        for number, url, fields in _read_hosts(hosts_file):
            where = f"--hosts {hosts_file}:{number}"
            try:
                target = SshTarget.parse(url)
            except ValueError as exc:
                raise CliError(f"{where}: {exc}", code=2) from None
            found.append((target, _for_host(options, fields, where)))
    if not found:
        raise CliError("give a host: corral node add ssh://user@host (or --hosts FILE)", code=2)
    return found


def _read_hosts(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    """(line number, url, fields) per line: `ssh://user@host[:port] [name=N] [rack=R]
    [install-dir=D] [KEY=VALUE]...` (other KEY=VALUE are labels); `#` starts a comment."""
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
        hosts.append((number, words[0], fields))
    if not hosts:
        raise CliError(f"--hosts {path}: no hosts in it (one ssh://user@host per line)", code=2)
    return hosts


def _for_host(options: AddOptions, fields: dict[str, str], where: str) -> AddOptions:
    """`options` with one hosts-file line's own name, rack, install dir and labels."""
    if not fields:
        return options
    rest = dict(fields)
    name = rest.pop("name", None) or options.name
    install_dir = (rest.pop("install-dir", None) or options.install_dir).rstrip("/")
    if not install_dir.startswith("/"):
        raise CliError(
            f"{where}: install-dir={install_dir!r}: expected an absolute directory", code=2
        )
    own = parse_labels([f"{k}={v}" for k, v in rest.items()], f"{where}: label")
    return replace(options, name=name, install_dir=install_dir, labels={**options.labels, **own})
