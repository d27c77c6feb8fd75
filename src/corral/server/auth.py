"""Tokens and who may do what. Tokens are random; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2}
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

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class Forbidden(Exception):
    pass


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
