"""Everything the CLI prints: consoles, tables, JSON, ages, and errors as one line each.

rich is imported on first use, so that importing a command module stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table

V = TypeVar("V", bound="BaseModel")

# Styles by state. Colour is decoration only: every state is also written out as a word.
JOB_STATE_STYLE = {
    "pending": "yellow",
    "starting": "cyan",
    "running": "blue",
    "cancelling": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}
REPLICA_STATE_STYLE = {
    "assigned": "cyan",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "stopped": "dim",
    "lost": "red",
}
CONDITION_STYLE = {"ready": "green", "cordoned": "yellow", "unhealthy": "red", "lost": "bold red"}


class CliError(Exception):
    """A failure to report as `error: message` (and an optional hint) with an exit code."""

    def __init__(self, message: str, code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def _console(stderr: bool) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped output is read by grep and scripts: truncating names to 80 columns hurts.
        console.width = 200
    return console


def out() -> Console:
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


def esc(text: object) -> str:
    """Text from the server or the user, safe to put inside rich markup."""
    from rich.markup import escape

    return escape(str(text))


def styled(text: str, style: str | None) -> str:
    return f"[{style}]{esc(text)}[/]" if style else esc(text)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def print_view(view: V, as_json: bool, render: Callable[[Console, V], None]) -> None:
    """One object the API answered: its JSON document (--json), or `render`ed for people."""
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        render(out(), view)


def print_page(page: BaseModel) -> None:
    """A list the API answered (EndpointList, NodeList, ...) as its JSON document: every
    item, without the cursor of the page it came on (the CLI has read them all)."""
    print_json(page.model_dump(mode="json", exclude={"next_cursor"}))


def table(*columns: str) -> Table:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def error_line(message: str, hint: str | None = None) -> None:
    console = err()
    for i, line in enumerate(message.splitlines() or [""]):
        prefix = "[bold red]error:[/] " if i == 0 else "       "
        # One message, one line, however narrow the terminal: scripts grep these.
        console.print(prefix + esc(line), soft_wrap=True)
    if hint:
        console.print("[dim]hint:[/] " + esc(hint), soft_wrap=True)


def warn(message: str) -> None:
    err().print("[yellow]warning:[/] " + esc(message), soft_wrap=True)


def note(message: str) -> None:
    """A status line for people, on stderr so that stdout stays the command's own output."""
    err().print(message)


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    return f"{duration(max(0.0, (time.time() if now is None else now) - ts))} ago"


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def format_mib(mib: int) -> str:
    if mib >= 1024 * 1024:
        return f"{mib / (1024 * 1024):.1f}Ti".replace(".0Ti", "Ti")
    if mib >= 1024:
        return f"{mib / 1024:.1f}Gi".replace(".0Gi", "Gi")
    return f"{mib}Mi"
