"""`corral --help` stays fast by importing nothing heavy: held by what it imports, not by a
stopwatch (which would be flaky on a loaded machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "httpx",
    "pydantic",
    "yaml",
    "psutil",
    "corral.client",
    "corral.spec",
    "corral.server",
    "corral.agent",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
)

PROBE = """
import atexit, sys
atexit.register(lambda: sys.__stdout__.write("\\nMODULES " + " ".join(sorted(sys.modules))))
sys.argv = ["corral", *sys.argv[1:]]
from corral.cli.main import main
main()
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["job", "--help"],
        ["job", "run", "--help"],
        ["up", "--help"],
        ["agent", "--help"],
    ],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NO_COLOR": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    modules = set(result.stdout.rsplit("MODULES ", 1)[1].split())
    assert "corral.cli.main" in modules  # the probe saw the real CLI run
    loaded = sorted(
        m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")
    )
    assert loaded == [], f"`corral {' '.join(args)}` imported {loaded}"
