"""What a trace loader returns, and the CSV reading every loader shares."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corral.sim.workload import Job
from corral.spec.errors import FieldError, SpecError


@dataclass(frozen=True)
class LoadedTrace:
    """Jobs sorted by submit time (then by their order in the file), and what the loader
    changed to fit corral's model, one line each (shown in the report)."""

    jobs: list[Job]
    notes: list[str] = field(default_factory=list)


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; a missing file or column is a SpecError."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise SpecError(str(path), [FieldError("", f"cannot read file: {exc.strerror}")]) from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise SpecError(
                str(path),
                [FieldError("header", f"missing column(s) {', '.join(missing)}; got {header}")],
            )
        for row in reader:
            yield reader.line_num, row


def number(path: Path, line: int, row: dict[str, str], column: str, *, default: str = "") -> float:
    """The float in `column`, or a SpecError naming the line and column."""
    text = (row.get(column) or default).strip()
    try:
        value = float(text)
    except ValueError:
        raise SpecError(
            str(path), [FieldError(f"line {line}: {column}", f"expected a number, got {text!r}")]
        ) from None
    if value < 0 or value != value:
        raise SpecError(
            str(path), [FieldError(f"line {line}: {column}", f"expected >= 0, got {text!r}")]
        )
    return value
