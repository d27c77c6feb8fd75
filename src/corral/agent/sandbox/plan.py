"""Which directories a confined replica must be able to reach, and how: pure, no I/O.

A replica runs as its workspace's unprivileged user. Some paths it needs lie below a
directory that user may not traverse: the agent's state directory (0700 root), or a
Python installed under root's home (/root is 0700). For each such *blocked* ancestor the
sandbox mounts an empty tmpfs over it, in the replica's own mount namespace, and binds
back only the paths the replica needs, each with its own permissions. Everything else
under the blocked ancestor (other replicas, node.json, config.json, the database) does not
exist in the replica's view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Reveal:
    """Mount a tmpfs over `blocked` and bind each of `leaves` (below it) back in."""

    blocked: str
    leaves: tuple[str, ...]


def _ancestors(path: PurePosixPath) -> list[PurePosixPath]:
    """Strict ancestors, from the root down: /a/b/c -> [/, /a, /a/b]."""
    return list(reversed(path.parents))


def minimal(paths: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    """Drop any path that lies inside another of them (binding the outer one is enough)."""
    result: list[PurePosixPath] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path == kept or kept in path.parents for kept in result):
            result.append(path)
    return sorted(result)


def reveals(needed: Iterable[str], traversable: Callable[[str], bool]) -> list[Reveal]:
    """The mounts that make every `needed` absolute path reachable.

    `traversable(dir)` says whether the replica's user may search `dir` (on the host, as
    the host answers it). A needed path with no blocked ancestor needs nothing.
    """
    leaves = minimal(PurePosixPath(p) for p in needed)
    blocked_of: dict[PurePosixPath, list[PurePosixPath]] = {}
    for leaf in leaves:
        for ancestor in _ancestors(leaf):
            if not traversable(str(ancestor)):
                blocked_of.setdefault(ancestor, []).append(leaf)
                break
    # A blocked directory inside another blocked one is covered by the outer tmpfs: the
    # skeleton built there is ours (0755), so its leaves are reached through it.
    outer = minimal(blocked_of)
    merged: dict[PurePosixPath, list[PurePosixPath]] = {b: [] for b in outer}
    for blocked, its_leaves in blocked_of.items():
        home = next(b for b in outer if b == blocked or b in blocked.parents)
        merged[home].extend(its_leaves)
    return [Reveal(str(b), tuple(str(leaf) for leaf in sorted(set(merged[b])))) for b in outer]


def workload_uid(base: int, uid_index: int) -> int:
    """The Unix uid of a workspace's replicas on every node: the same everywhere, so files
    on a shared filesystem (checkpoints) keep one owner across nodes."""
    if uid_index < 1:
        raise ValueError(f"uid_index must be >= 1, not {uid_index}")
    return base + uid_index
