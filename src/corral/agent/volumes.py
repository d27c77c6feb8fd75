"""Workspace volumes on a node: `<root>/<workspace>/<name>`. Standard library only (the shim
and the sandbox's init use it).

```
<root>                 0711 root: anyone may pass through to a directory whose name they
                       know, nobody but root may list which workspaces have volumes here
  <workspace>/         0700, the workspace's uid: another workspace cannot even enter it
    <name>/            0700, the workspace's uid: a volume (bound at the spec's path)
    .pods/<pod id>/    0700, the workspace's uid: a pod's working directory (work_volume)
```

On a fleet the root is a shared mount at the same path on every node and the workspace's
uid is the same everywhere (sandbox/README.md, *Uids*), so a volume or a pod's files follow
it to any node.

A workspace owns `<root>/<workspace>` and may put anything there, symlinks included (a
replica whose view shows the root, or a previous tenant of the name). So everything below
the root, which the operator chose and trusts, is walked one component at a time with
`O_NOFOLLOW`, created with mkdirat and changed through the open descriptor (fchown,
fchmod): a planted link is refused, never followed. A directory owned by another uid than
the workspace's is refused too, not taken over: it is another tenant's (a deleted workspace
of the same name), and handing it over would hand over its files.

A confined replica's view gets each volume bound from a descriptor opened that way
(sandbox/init.py), never by path, so swapping a volume for a link between the agent's check
and the bind does not redirect the bind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from corral.agent.sandbox.files import UnsafePath, make_dir_at, open_dir_at

VOLUMES = "volumes.json"  # the replica's plan, written by the agent (runner.py)
ENV_PREFIX = "CORRAL_VOLUME_"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # spec/names.py's rule
_COMPONENT = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
MAX_DEPTH = 4


class VolumeError(ValueError):
    """A volume cannot be used: the message names it and says why."""


class VolumeInUse(VolumeError):
    """A running replica mounts the volume."""


def check_workspace(workspace: str) -> str:
    if not _NAME.match(workspace):
        raise VolumeError(f"workspace {workspace!r}: not a workspace name")
    return workspace


def check_name(name: str) -> str:
    """A volume's name: one path component, the names rule (no '.', no '/')."""
    if not _NAME.match(name):
        raise VolumeError(
            f"volume name {name!r}: expected 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_relative(relative: str, what: str = "work_volume") -> PurePosixPath:
    """A directory below `<root>/<workspace>`, written plainly: relative, at most
    MAX_DEPTH components of letters, digits, '.', '_' and '-', none of them '.' or '..'."""
    parts = relative.split("/")
    if (
        not relative
        or len(parts) > MAX_DEPTH
        or any(p in ("", ".", "..") or not _COMPONENT.match(p) for p in parts)
    ):
        raise VolumeError(
            f"{what} {relative!r}: expected a relative path like '.pods/ID' (at most "
            f"{MAX_DEPTH} parts of letters, digits, '.', '_', '-'; no '..', no leading '/')"
        )
    return PurePosixPath(relative)


def check_mount_path(name: str, path: str) -> str:
    """Where a volume is seen: an absolute path written plainly, not '/'."""
    pure = PurePosixPath(path)
    if (
        not pure.is_absolute()
        or path != os.path.normpath(path)
        or path.startswith("//")
        or ".." in pure.parts
        or path == "/"
        or "\0" in path
    ):
        raise VolumeError(f"volume {name}: path {path!r} is not a plain absolute path")
    return path


def env_name(name: str) -> str:
    """CORRAL_VOLUME_<NAME>: upper case, '-' as '_'."""
    return ENV_PREFIX + name.upper().replace("-", "_")


def host_path(root: Path, workspace: str, relative: str) -> Path:
    """`<root>/<workspace>/<relative>`, validated: it cannot leave `<root>/<workspace>`."""
    return root / check_workspace(workspace) / check_relative(relative, "volume")


@dataclass(frozen=True)
class Mount:
    name: str
    host: str  # <root>/<workspace>/<name>
    path: str  # where the replica sees it


@dataclass(frozen=True)
class Plan:
    """One replica's volumes, as the agent resolved them (volumes.json)."""

    root: str
    workspace: str
    mounts: tuple[Mount, ...] = ()
    work: str | None = None  # the working directory's relative path, for a pod

    def relatives(self) -> list[str]:
        return [m.name for m in self.mounts] + ([self.work] if self.work else [])

    def work_host(self) -> str | None:
        return str(Path(self.root) / self.workspace / self.work) if self.work else None

    def to_json(self) -> dict[str, object]:
        return {
            "root": self.root,
            "workspace": self.workspace,
            "mounts": [{"name": m.name, "host": m.host, "path": m.path} for m in self.mounts],
            "work": self.work,
        }

    @classmethod
    def from_json(cls, data: object) -> Plan:
        if not isinstance(data, dict):
            raise ValueError(f"{VOLUMES}: expected a JSON object")
        mounts = tuple(
            Mount(str(m["name"]), str(m["host"]), str(m["path"])) for m in data["mounts"]
        )
        work = data.get("work")
        return cls(str(data["root"]), str(data["workspace"]), mounts, str(work) if work else None)

    def environment(self, confined: bool) -> dict[str, str]:
        """CORRAL_VOLUME_<NAME>: where the workload finds each volume."""
        return {env_name(m.name): m.path if confined else m.host for m in self.mounts}


def plan(
    root: Path, workspace: str, volumes: list[tuple[str, str]], work_volume: str | None
) -> Plan:
    """Validate an assignment's volumes and work_volume (pure). Raises VolumeError."""
    check_workspace(workspace)
    mounts: list[Mount] = []
    seen: set[str] = set()
    for name, path in volumes:
        check_name(name)
        check_mount_path(name, path)
        if path in seen:
            raise VolumeError(f"volume {name}: two volumes mount at {path}")
        seen.add(path)
        mounts.append(Mount(name, str(root / workspace / name), path))
    work = str(check_relative(work_volume)) if work_volume is not None else None
    return Plan(str(root), workspace, tuple(mounts), work)


def _own(fd: int, made: bool, uid: int | None, gid: int | None, where: str) -> None:
    """Make the open directory the workspace's (uid None: this process's), mode 0700."""
    st = os.fstat(fd)
    if uid is not None and st.st_uid != uid:
        if not made and st.st_uid != 0:
            raise VolumeError(
                f"{where} belongs to uid {st.st_uid}, not this workspace's ({uid}): "
                "another tenant's (a deleted workspace of the same name?); left alone"
            )
        os.fchown(fd, uid, uid if gid is None else gid)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.fchmod(fd, 0o700)


def open_root(root: Path, *, create: bool) -> int:
    """The volume root, opened (the operator's path: links in it are the operator's). A
    root of this process's gets 0711: passable, not listable (see the module's doc)."""
    if create:
        # Its parents as the usual 0755 (the agent runs with umask 077).
        old = os.umask(0o022)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o711)
        finally:
            os.umask(old)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o711:
        os.fchmod(fd, 0o711)
    return fd


def ensure(
    root: Path, workspace: str, relative: str, uid: int | None, gid: int | None = None
) -> int:
    """Create `<root>/<workspace>/<relative>` as needed, every directory below the root
    the workspace's (uid None: this process's, unconfined), 0700; return it open."""
    parts = [check_workspace(workspace), *check_relative(relative, "volume").parts]
    fd = open_root(root, create=True)
    where = root
    try:
        for part in parts:
            where = where / part
            made = make_dir_at(fd, part, 0o700)
            nxt = open_dir_at(fd, part)
            os.close(fd)
            fd = nxt
            _own(fd, made, uid, gid, str(where))
    except UnsafePath as exc:
        os.close(fd)
        raise VolumeError(f"{where}: {exc.strerror}; refused") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_existing(root: Path, workspace: str, relative: str, uid: int | None) -> int:
    """`<root>/<workspace>/<relative>` opened without following a link; it must be the
    workspace's (uid None: not checked). For binding it (sandbox/init.py)."""
    parts = [check_workspace(workspace), *check_relative(relative, "volume").parts]
    fd = open_root(root, create=False)
    where = root
    try:
        for part in parts:
            where = where / part
            nxt = open_dir_at(fd, part)
            os.close(fd)
            fd = nxt
        if uid is not None and os.fstat(fd).st_uid != uid:
            raise VolumeError(f"{where} is not the workspace's (uid {uid}): refused")
    except UnsafePath as exc:
        os.close(fd)
        raise VolumeError(f"{where}: {exc.strerror}; refused") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def drop(root: Path, workspace: str, name: str) -> None:
    """Remove `<root>/<workspace>/<name>` (a volume, or a pod's '.pods/<id>') and all in
    it, following no link: a link found in its place is removed itself, never its target.
    Missing is fine (never used on this node). It does not know what runs: the caller
    (Runner.drop_volume) refuses while a replica mounts it."""
    rel = check_relative(name, "volume")
    try:
        fd = open_root(root, create=False)
    except FileNotFoundError:
        return
    try:
        for part in [check_workspace(workspace), *rel.parent.parts]:
            try:
                nxt = open_dir_at(fd, part)
            except FileNotFoundError:
                return
            except UnsafePath:
                return  # a link where a directory of ours should be: nothing of ours there
            os.close(fd)
            fd = nxt
        try:
            st = os.lstat(rel.name, dir_fd=fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            # Descriptor-based on Linux: immune to links swapped in while it runs.
            shutil.rmtree(rel.name, dir_fd=fd)
        else:
            os.unlink(rel.name, dir_fd=fd)
    finally:
        os.close(fd)
