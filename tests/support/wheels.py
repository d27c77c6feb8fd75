"""Tiny pure-Python wheels and a PEP 503 "simple" index of them on disk, for tests and
benchmarks that install packages with uv without reaching any real package index.

A wheel is a zip with the package, NAME-VER.dist-info/{METADATA,WHEEL,RECORD}; the index is
`<root>/simple/<project>/index.html` linking to `<root>/files/<wheel>`, which uv reads
through a `file://` index URL (`index_url(root)`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """One project to build a wheel of: `import NAME` gives `VALUE == VERSION` unless
    `files` says otherwise (paths inside the wheel -> text)."""

    name: str
    version: str = "1.0"
    requires: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(package: Package, out_dir: Path) -> Path:
    """Writes `<out_dir>/<name>-<version>-py3-none-any.whl` and returns its path."""
    module = package.name.replace("-", "_")
    dist_info = f"{module}-{package.version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {package.name}\nVersion: {package.version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in package.requires)
    files = dict(package.files) or {
        f"{module}/__init__.py": f"VERSION = {package.version!r}\n",
    }
    files[f"{dist_info}/METADATA"] = metadata
    files[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: corral-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [
        f"{path},sha256={_digest(text.encode())},{len(text.encode())}"
        for path, text in files.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{module}-{package.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def write_index(root: Path, packages: Iterable[Package]) -> Path:
    """Builds every package's wheel under `<root>/files` and the simple index under
    `<root>/simple`; returns `<root>/simple`."""
    by_project: dict[str, list[Path]] = {}
    for package in packages:
        wheel = build_wheel(package, root / "files")
        by_project.setdefault(normalize(package.name), []).append(wheel)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(by_project))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    for project, wheels in by_project.items():
        page = simple / project
        page.mkdir(exist_ok=True)
        anchors = "".join(
            f'<a href="../../files/{html.escape(w.name)}#sha256='
            f'{hashlib.sha256(w.read_bytes()).hexdigest()}">{html.escape(w.name)}</a>\n'
            for w in sorted(wheels)
        )
        (page / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{anchors}</body></html>\n"
        )
    return simple


def index_url(root: Path) -> str:
    """The `--index-url` of the index `write_index(root, …)` wrote."""
    return (root / "simple").resolve().as_uri()
