"""The isolation settings, light enough for the CLI to import at start-up."""

from __future__ import annotations

from enum import StrEnum

# Far above the uids of people and of most subordinate-uid ranges (/etc/subuid).
DEFAULT_UID_BASE = 1_000_000


class IsolationMode(StrEnum):
    AUTO = "auto"  # confined when the agent can (root, namespaces), else not, said loudly
    USER = "user"  # confined, or the agent refuses to start
    NONE = "none"  # never confined (a laptop; tests that share host files with workloads)
