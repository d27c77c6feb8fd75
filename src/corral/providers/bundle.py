"""The agent bundle: everything a host needs to run `corral agent`, in one tar.gz.

Built from the server's own environment (no index, no internet): corral and the closure of
its runtime requirements (importlib.metadata's Requires-Dist; corral's own extras left out,
a requirement's extras followed) less the server's own stack (SERVER_ONLY: the database,
the web framework, the AWS SDK), each distribution's files as its RECORD lists them. Layout:

```
bundle.json        {"python": "3.11", "implementation": "cpython", "platform": "linux-x86_64",
                    "dists": {"name": "version", ...}}
site-packages/...  unpacked into the host venv's purelib (providers/install.py)
bin/...            executables a distribution installs (uv's binary); text scripts with a
                   shebang are left out: they name this server's interpreter
```

So a host needs the same Python major.minor, implementation and platform as the server
(compiled extensions are the server's). The bundle is cached under
`<home>/bundles/<key>.tar.gz`, the key a hash of the distributions' names and versions,
the interpreter, and (for an editable install, as in development) the source files' sizes
and mtimes. One build at a time per key (single flight); later calls reuse the file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import sys
import sysconfig
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT_DIST = "corral"
# The control plane's own stack, which the agent never imports (test_bundle checks that
# `corral agent` runs without them): left out with what only they need, it halves what a
# host unpacks (the AWS SDK alone is 2,000 files).
SERVER_ONLY = frozenset({"alembic", "boto3", "fastapi", "sqlalchemy", "uvicorn"})
_COMPRESS_LEVEL = 1  # on the critical path of `node add`: speed over a few MB
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_built: dict[str, BundleInfo] = {}


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    key: str
    python: str  # "3.11"
    implementation: str  # "cpython"
    platform: str  # sysconfig.get_platform()
    sha256: str
    bytes: int

    def as_json(self) -> dict[str, object]:
        return {
            "python": self.python,
            "implementation": self.implementation,
            "platform": self.platform,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "key": self.key,
        }


class BundleError(Exception):
    """The server's environment cannot be bundled (a distribution is missing)."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter() -> dict[str, str]:
    return {
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
    }


def closure(
    root: str = ROOT_DIST, leave_out: frozenset[str] = SERVER_ONLY
) -> list[md.Distribution]:
    """`root` and every distribution its runtime requirements need here, sorted by name,
    but for `leave_out` and what only they require."""
    env = {k: str(v) for k, v in default_environment().items()}
    found: dict[str, md.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (_normalize(name), extras)
        if key in seen or key[0] in leave_out:
            continue
        seen.add(key)
        try:
            dist = found.get(key[0]) or md.distribution(name)
        except md.PackageNotFoundError:
            raise BundleError(
                f"the server's environment lacks {name}, which the agent needs: "
                "reinstall corral with its dependencies"
            ) from None
        found[key[0]] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return [found[n] for n in sorted(found)]


def _editable_source(dist: md.Distribution) -> Path | None:
    """The package directory of an editable install (a development checkout), else None."""
    text = dist.read_text("direct_url.json")
    if not text or '"editable": true' not in text.replace("'", '"'):
        return None
    module = dist.read_text("top_level.txt") or dist.metadata["Name"]
    spec = __import__(module.split()[0].replace("-", "_"))
    file = getattr(spec, "__file__", None)
    return Path(file).parent if file else None


def _members(dist: md.Distribution) -> Iterator[tuple[str, Path]]:
    """(path in the bundle, file here) for one distribution."""
    source = _editable_source(dist)
    bindir = Path(sysconfig.get_paths()["scripts"]).resolve()
    for entry in dist.files or []:
        rel = str(entry)
        local = Path(str(dist.locate_file(entry))).resolve()
        if rel.startswith(".."):
            if local.parent == bindir and local.is_file() and not _is_script(local):
                yield f"bin/{local.name}", local
            continue
        if source is not None and rel.endswith(".pth"):
            continue  # the editable hook points at this checkout: the files come below
        if local.is_file():
            yield f"site-packages/{rel}", local
    if source is not None:
        for path in sorted(source.rglob("*")):
            if path.is_file() and (not path.name.endswith(".pyc") or _own_pyc(path)):
                yield f"site-packages/{source.name}/{path.relative_to(source)}", path


def _own_pyc(path: Path) -> bool:
    return path.name.endswith(f".{sys.implementation.cache_tag}.pyc")


def _is_script(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"#!"


def _fingerprint(dists: list[md.Distribution]) -> str:
    h = hashlib.sha256(json.dumps(interpreter(), sort_keys=True).encode())
    for dist in dists:
        h.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
        source = _editable_source(dist)
        if source is not None:
            for path in sorted(source.rglob("*.py")):
                stat = path.stat()
                h.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def bundle_info(home: Path) -> BundleInfo:
    """The agent bundle for this server, built into `<home>/bundles` when not there yet."""
    dists = closure()
    key = _fingerprint(dists)
    path = home / "bundles" / f"{key}.tar.gz"
    known = _built.get(str(path))
    if known is not None and known.path.is_file():
        return known
    with _lock(str(path)):
        known = _built.get(str(path))
        if known is not None and known.path.is_file():
            return known
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            _build(dists, path)
        info = BundleInfo(
            path=path, key=key, sha256=_sha256(path), bytes=path.stat().st_size, **interpreter()
        )
        _built[str(path)] = info
        return info


def _build(dists: list[md.Distribution], dest: Path) -> None:
    meta = {**interpreter(), "dists": {d.metadata["Name"]: d.version for d in dists}}
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".bundle-", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=_COMPRESS_LEVEL, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            _add_bytes(tar, "bundle.json", json.dumps(meta, indent=1).encode(), 0o644)
            for name in ("site-packages", "bin"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            seen: set[str] = set()
            for dist in dists:
                for arcname, local in _members(dist):
                    if arcname in seen:
                        continue
                    seen.add(arcname)
                    tar.add(str(local), arcname=arcname, recursive=False, filter=_plain)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
