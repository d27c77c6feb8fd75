"""`sandbox.json`: how the shim confines one replica, written by the agent (0600, root).

Standard library only: the shim and the sandbox's init read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SANDBOX = "sandbox.json"


@dataclass(frozen=True)
class SandboxConfig:
    uid: int
    gid: int
    user: str  # a name for $USER; the uid has no passwd entry, like systemd's DynamicUser
    home: str  # the workspace's home on this node (caches: pip, torch, Hugging Face)
    work: str  # the replica's default working directory
    status: str
    tmp: str
    checkpoint_dir: str | None = None
    # The workspace's checkpoint directory on this node (<root>/<workspace>), owned by its
    # user: every checkpoint_dir of the workspace lies inside it.
    workspace_checkpoints: str | None = None
    # Whatever else must stay reachable: the Python running corral (its prefixes).
    expose: list[str] = field(default_factory=list)
    # The spec's own directories on the node (working_dir, an app file's directory): shown
    # only if the replica's user may reach them on the host (init.py checks), never by
    # binding them past a directory it may not enter.
    host_paths: list[str] = field(default_factory=list)

    def needed(self) -> list[str]:
        paths = [self.home, self.work, self.status, *self.expose]
        if self.workspace_checkpoints:
            paths.append(self.workspace_checkpoints)
        return paths

    def user_env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.user, "LOGNAME": self.user, "TMPDIR": "/tmp"}

    def save(self, path: Path) -> None:
        import os

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(self), out)

    @classmethod
    def load(cls, path: Path) -> SandboxConfig:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls(**data)
