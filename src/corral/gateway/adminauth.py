"""Who may read the gateway's own `/_corral/` paths.

`/_corral/load` and `/_corral/metrics` name every workspace's endpoints, replicas and
traffic, so they answer only a bearer of the gateway's control-plane token (a cluster
admin's) or of a dedicated metrics token (`--metrics-token-file`, for a Prometheus
scraper that should not hold an admin token). `/_corral/healthz` stays public: it says
nothing but "up".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PUBLIC_PATHS = frozenset({b"/_corral/healthz"})


class AdminAuth:
    def __init__(self, tokens: Iterable[str | None] = ()) -> None:
        # Digests, so a comparison's time says nothing about how much of a token matched
        # and every accepted token is compared whatever the first one's result.
        self._digests = tuple(hashlib.sha256(t.encode()).digest() for t in tokens if t)

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def allows(self, authorization: bytes | None) -> bool:
        if not authorization or authorization[:7].lower() != b"bearer ":
            return False
        presented = hashlib.sha256(authorization[7:].strip()).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(digest, presented)
        return matched
