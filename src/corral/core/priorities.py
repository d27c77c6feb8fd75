"""Named priority classes. Its own module so the spec can use it without loading the scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_PRIORITY_CLASSES: Mapping[str, int] = MappingProxyType(
    {"endpoint": 300, "dev": 200, "train": 100, "batch": 0}
)


def class_name(priority: int, classes: Mapping[str, int] = DEFAULT_PRIORITY_CLASSES) -> str | None:
    """The class a priority number is exactly, if any (for display)."""
    return next((name for name, value in classes.items() if value == priority), None)
