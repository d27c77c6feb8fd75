"""The control plane's agent bundle for `corral node add`: GET /v1/agent/bundle, checked
against its sha256 and kept under $CORRAL_HOME/bundles by it (downloaded once)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.client import Settings
    from corral.providers.ssh_check import BundleMeta


def fetch_bundle(settings: Settings, home: Path) -> tuple[Path, BundleMeta]:
    """The control plane's agent bundle, downloaded once into home/bundles."""
    import httpx

    from corral.providers.ssh_check import BundleMeta

    server = (settings.server or "").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    try:
        with httpx.Client(base_url=server, headers=headers, timeout=300) as http:
            answer = http.get("/v1/agent/bundle/info")
            if answer.status_code != 200:
                raise CliError(describe_http("bundle", answer), code=1)
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
                    raise CliError(describe_http("bundle", body), code=1)
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


def describe_http(step: str, answer: Any) -> str:
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {answer.status_code}"
    return f"step {step}: the control plane answered: {message}"
