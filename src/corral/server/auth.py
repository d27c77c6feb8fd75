"""Tokens and who may do what. Tokens are random; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

from corral.server.errors import Forbidden, Invalid  # raised here and by the services

__all__ = ["Forbidden"]

ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2}
# Reads /metrics and nothing else: outside the ranks, so it passes no `at_least` and no
# workspace check, and a scraper's token (often left in a Prometheus config) reveals no work.
METRICS_ROLE = "metrics"
ADMIN_PREFIX = "crl_"
JOIN_PREFIX = "crj_"
NODE_PREFIX = "crn_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # The secrets carry 256 random bits, so a fast hash is enough (no password stretching).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: str
    token_name: str
    role: str
    workspace_id: str | None
    workspace: str | None

    @property
    def cluster_admin(self) -> bool:
        return self.workspace_id is None and self.role == "admin"

    @property
    def reads_metrics(self) -> bool:
        """Whether /metrics answers it: the fleet's figures are the operator's business."""
        return self.cluster_admin or (self.workspace_id is None and self.role == METRICS_ROLE)

    def at_least(self, role: str) -> bool:
        rank = ROLE_RANK.get(self.role)
        return rank is not None and rank >= ROLE_RANK[role]


def check_metrics_token(principal: Principal, workspace: str | None) -> None:
    """Raise unless `principal` may create a metrics token for `workspace`: only a cluster
    admin, and only cluster-wide (the figures span every workspace)."""
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can create a metrics token")
    if workspace is not None:
        message = "a metrics token is cluster-wide: create it without a workspace"
        raise Invalid(message, [{"path": "workspace", "message": message}])


def refuse_metrics_only(principal: Principal) -> Principal:
    """`principal`, unless its token may only read /metrics (then a 403)."""
    if principal.role == METRICS_ROLE:
        raise Forbidden("a metrics token reads /metrics and nothing else")
    return principal


def may_act_in(principal: Principal, workspace: str, role: str) -> bool:
    """Whether check_workspace_access would let `principal` act (a page's buttons)."""
    try:
        check_workspace_access(principal, workspace, role)
    except Forbidden:
        return False
    return True


def check_workspace_access(principal: Principal, workspace: str, role: str) -> None:
    """Raise Forbidden unless `principal` may act in `workspace` with at least `role`."""
    if principal.cluster_admin:
        return
    if principal.workspace != workspace:
        raise Forbidden(
            f"this token belongs to workspace '{principal.workspace}' and cannot act in "
            f"workspace '{workspace}'"
        )
    if not principal.at_least(role):
        raise Forbidden(f"this needs the {role} role; the token has {principal.role}")


class JoinRefusal(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED_UP = "used_up"
    REVOKED = "revoked"


class JoinTokenRejected(Exception):
    """A node may not register with this join token; `reason` says which check failed."""

    def __init__(self, reason: JoinRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class AuthFailures:
    """Failed authentications per client address, to make guessing tokens slow.

    Pure bookkeeping (every call is handed `now`): a client that fails `limit` times within
    `window_s` of its first failure is refused until that window ends. At most
    `max_clients` addresses are remembered; when full, the oldest tenth is forgotten, so
    memory stays bounded whatever an attacker sends, at the price that one who cycles
    through that many addresses may be forgotten early. Clients behind one address (a NAT,
    a proxy that does not forward theirs) share one budget.
    """

    def __init__(self, limit: int = 20, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        # client -> (window start, failures); insertion order is window-start order.
        self._windows: dict[str, tuple[float, int]] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0.0 when it may now."""
        entry = self._windows.get(client)
        if entry is None:
            return 0.0
        start, failures = entry
        end = start + self.window_s
        if now >= end:
            del self._windows[client]
            return 0.0
        return end - now if failures >= self.limit else 0.0

    def failed(self, client: str, now: float) -> None:
        entry = self._windows.get(client)
        if entry is not None and now < entry[0] + self.window_s:
            self._windows[client] = (entry[0], entry[1] + 1)  # keeps its place in the order
            return
        self._windows.pop(client, None)
        if len(self._windows) >= self.max_clients:
            for old in list(islice(self._windows, max(1, self.max_clients // 10))):
                del self._windows[old]
        self._windows[client] = (now, 1)

    def __len__(self) -> int:
        return len(self._windows)
