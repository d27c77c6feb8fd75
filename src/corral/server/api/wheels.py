"""/v1/wheels: the server's wheelhouse as a PEP 503 simple index, for nodes that cannot
reach PyPI (environments are built with uv from it: ReplicaAssignment.wheelhouse).

Readable without a token: it is a mirror of public packages that the operator put in
CORRAL_WHEELHOUSE (a directory of .whl files), as the agent's own wheel is. Without a
wheelhouse every route answers 404.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from corral.server.api.deps import CP
from corral.server.api.errors import ApiError

router = APIRouter(prefix="/v1/wheels", tags=["wheels"])
# name-version(-build)?-python-abi-platform.whl; the name has no "-" (PEP 427 escapes it).
_WHEEL = re.compile(r"^([A-Za-z0-9_.]+)-[^-/]+(-[^-/]+)?-[^-/]+-[^-/]+-[^-/]+\.whl$")
_PROJECT = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_HASH_CACHE = 4096  # wheel files whose digests are remembered, by (path, size, mtime)


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _directory(cp: CP) -> Path:
    root = cp.options.wheelhouse
    if root is None:
        raise ApiError(404, "not_found", "this server has no wheelhouse (CORRAL_WHEELHOUSE)")
    return root


def _wheels(root: Path) -> dict[str, list[str]]:
    """Normalized project -> its wheel file names."""
    projects: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return {}
    for name in names:
        match = _WHEEL.match(name)
        if match and (root / name).is_file():
            projects.setdefault(normalize(match.group(1)), []).append(name)
    return projects


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _hash_file(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=_HASH_CACHE)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are the cache key: a replaced wheel is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _page(title: str, links: list[tuple[str, str]]) -> HTMLResponse:
    anchors = "\n".join(
        f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links
    )
    body = (
        "<!DOCTYPE html>\n<html>\n  <head>"
        '<meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n  <body>\n{anchors}\n  </body>\n</html>\n"
    )
    return HTMLResponse(body)


@router.get("/simple/")
def index(cp: CP) -> HTMLResponse:
    projects = _wheels(_directory(cp))
    return _page("corral wheelhouse", [(f"{p}/", p) for p in sorted(projects)])


@router.get("/simple/{project}/")
def project_page(project: str, cp: CP) -> HTMLResponse:
    root = _directory(cp)
    files = _wheels(root).get(normalize(project)) if _PROJECT.match(project) else None
    if not files:
        raise ApiError(404, "not_found", f"project {project[:80]!r} is not in the wheelhouse")
    links = [(f"../../files/{name}#sha256={_sha256(root / name)}", name) for name in files]
    return _page(f"Links for {normalize(project)}", links)


@router.get("/files/{filename}")
def wheel_file(filename: str, cp: CP) -> FileResponse:
    root = _directory(cp)
    match = _WHEEL.match(filename)
    path = root / filename
    if match is None or "/" in filename or not path.is_file():
        raise ApiError(404, "not_found", f"{filename[:80]!r} is not in the wheelhouse")
    return FileResponse(path, media_type="application/octet-stream", filename=filename)
