"""`volumes: {NAME: /path}`: workspace volumes a pod or a job mounts."""

from __future__ import annotations

import posixpath

from corral.spec.names import check_name

MAX_VOLUMES = 16
# Mounting over these would hide what every process needs, or the replica's own machinery.
RESERVED = ("/", "/proc", "/dev", "/sys", "/tmp", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")


def check_volumes(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_VOLUMES:
        raise ValueError(f"{len(value)} volumes; at most {MAX_VOLUMES}")
    seen: set[str] = set()
    for name, path in value.items():
        check_name(name, "volume name")
        if not path.startswith("/") or len(path) > 1024:
            raise ValueError(f"volume {name}: expected an absolute path, got {path!r}")
        norm = posixpath.normpath(path)
        if norm != path.rstrip("/") or ".." in path.split("/"):
            raise ValueError(f"volume {name}: write the path plainly ({norm!r}), not {path!r}")
        if any(norm == r or (r != "/" and norm.startswith(r + "/")) for r in RESERVED[:5]):
            raise ValueError(f"volume {name}: cannot mount at {norm} (a system directory)")
        if norm in RESERVED:
            raise ValueError(f"volume {name}: cannot mount at {norm} (a system directory)")
        if norm in seen:
            raise ValueError(f"two volumes mount at {norm}")
        seen.add(norm)
    return value
