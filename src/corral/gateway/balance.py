"""Which replica gets the next request: least outstanding, with optional bounded affinity.

Affinity (requests sharing a header value go to one replica, so its prefix/KV cache stays
warm) uses rendezvous hashing: the replica set can change and only keys on the changed
replica move. The preferred replica is skipped while it carries more than its share —
the bounded-load rule of "Consistent Hashing with Bounded Loads" (Mirrokni et al.), with
c = 1.25 — or more than an explicit per-replica cap; then least outstanding decides.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

# A key's preferred replica may carry up to 25% above the mean before requests move off it.
BOUNDED_LOAD_FACTOR = 1.25


class Candidate(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


def least_outstanding(replicas: Sequence[C], turn: int) -> C | None:
    """The replica with fewest requests in flight; ties rotate with `turn`."""
    if not replicas:
        return None
    n = len(replicas)
    best = replicas[turn % n]
    for i in range(1, n):
        candidate = replicas[(turn + i) % n]
        if candidate.in_flight < best.in_flight:
            best = candidate
    return best


def _weight(key: bytes, replica_id: str) -> int:
    digest = hashlib.blake2b(key + b"\0" + replica_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def saturated(replica: Candidate, replicas: Sequence[Candidate], cap: int) -> bool:
    if cap > 0 and replica.in_flight >= cap:
        return True
    total = sum(r.in_flight for r in replicas) + 1
    return replica.in_flight + 1 > math.ceil(total / len(replicas) * BOUNDED_LOAD_FACTOR)


def pick(replicas: Sequence[C], turn: int, key: bytes | None, cap: int) -> C | None:
    """Choose among `replicas` (all able to take traffic) for a request with affinity `key`."""
    if key is None or len(replicas) < 2:
        return least_outstanding(replicas, turn)
    preferred = max(replicas, key=lambda r: _weight(key, r.id))
    if not saturated(preferred, replicas, cap):
        return preferred
    return least_outstanding(replicas, turn)
