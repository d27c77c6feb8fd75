"""Names of things (jobs, endpoints, workspaces, secrets): one rule, used everywhere."""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 63  # a DNS label: names appear in hostnames (NAME.<domain>)
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str, what: str = "name") -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value
