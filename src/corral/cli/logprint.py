"""Print job logs: one replica's as it is, several replicas' line by line, each line prefixed
with its rank (`[0] `, `[1] `, as `kubectl logs --prefix` and `sky logs` do), the prefix
coloured on a terminal and plain otherwise (NO_COLOR, a pipe)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

# Distinct, readable on dark and light backgrounds; cycled for ranks beyond six.
_COLOURS = ("36", "33", "35", "32", "34", "31")


def use_colour(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LogPrinter:
    """Writes log text as it arrives; with `prefixed`, whole lines only, each after its
    replica's prefix (a partial line waits for its end, or for `close`)."""

    def __init__(self, prefixed: bool, stream: TextIO | None = None) -> None:
        self.prefixed = prefixed
        self.stream = stream or sys.stdout
        self.colour = use_colour(self.stream)
        self._partial: dict[int, str] = {}
        self._at_line_start = True

    def write(self, rank: int, data: str) -> None:
        if not data:
            return
        if not self.prefixed:
            self._emit(data)
            return
        text = self._partial.pop(rank, "") + data
        lines = text.split("\n")
        if lines[-1]:
            self._partial[rank] = lines[-1]
        whole = lines[:-1]
        if whole:
            self._emit("".join(self.prefix(rank) + line + "\n" for line in whole))

    def close(self) -> None:
        """End every partial line (a log that does not end with a newline)."""
        for rank in sorted(self._partial):
            self._emit(self.prefix(rank) + self._partial[rank] + "\n")
        self._partial.clear()
        if not self._at_line_start:
            self._emit("\n")

    def prefix(self, rank: int) -> str:
        text = f"[{rank}] "
        if not self.colour:
            return text
        return f"\x1b[{_COLOURS[rank % len(_COLOURS)]}m{text}\x1b[0m"

    def _emit(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._at_line_start = text.endswith("\n")
