"""`corral console`: the address, and the token only when asked."""

from __future__ import annotations

from support.app import ADMIN_TOKEN
from support.cli import Cli


def test_console_prints_the_address_and_keeps_the_token_back(cli: Cli) -> None:
    result = cli("console")
    assert result.exit_code == 0, result.output
    assert "/ui/" in result.output.splitlines()[0]
    assert ADMIN_TOKEN not in result.output
    shown = cli("console", "--show-token")
    assert shown.exit_code == 0
    assert f"token    {ADMIN_TOKEN}" in shown.output
