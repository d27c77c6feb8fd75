"""Parsing of human sizes ("16Gi", "512MB", 32) into MiB."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[KMGT]B|B)?\s*$", re.IGNORECASE)
_BINARY = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_DECIMAL = {"k": 1e3 / 2**20, "m": 1e6 / 2**20, "g": 1e9 / 2**20, "t": 1e12 / 2**20}


def parse_size_mib(value: object, *, default_unit: str = "Gi") -> int:
    """Return a size in MiB. A bare number is in `default_unit` (GiB, like dstack/SkyPilot)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16Gi, 512Mi or 32 (GiB)")
    if isinstance(value, int | float):
        text = f"{value}{default_unit}"
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError("expected a size such as 16Gi, 512Mi or 32 (GiB)")
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a size; expected e.g. 16Gi, 512Mi, 80GB or 32 (GiB)")
    number = float(match.group(1))
    unit = (match.group(2) or default_unit).lower()
    if unit == "b":
        return int(number // 2**20)
    prefix = unit[0]
    factor = _BINARY[prefix] if "i" in unit else _DECIMAL[prefix]
    if number < 0:
        raise ValueError("a size cannot be negative")
    return round(number * factor)


def format_mib(mib: int) -> str:
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    if mib >= 1024:
        return f"{mib / 1024:.1f}Gi"
    return f"{mib}Mi"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(value: object) -> float:
    """Seconds from "90", 90, "30m", "2h", "1h30m" or "1d"."""
    message = f"{value!r} is not a duration; expected e.g. 90 (seconds), 30m, 2h or 1h30m"
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
                raise ValueError(message) from None
            seconds = sum(float(n) * _SECONDS[u.lower()] for n, u in parts)
    else:
        raise ValueError(message)
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds
