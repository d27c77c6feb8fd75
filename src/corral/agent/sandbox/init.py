"""`python -m corral.agent.sandbox.init REPLICA_DIR`: PID 1 of a confined replica.

The shim (root, on the host) starts it in a new PID namespace. As root it builds the
replica's view of the filesystem in a mount namespace of its own, then drops to the
workspace's user for good, writes the replica's files, starts the workload and stays PID 1:
it reaps orphans, and when the workload exits so does it, which ends every process left in
the namespace (daemons that escaped the process group included). Standard library only.

Signals: the workload is in this process's group, so the agent's TERM/KILL to the group
reach it directly; PID 1 only ignores them (a PID 1 without handlers would not even see
TERM, and must not die before the workload has had its grace).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import FrameType

from corral.agent.layout import ASSIGNMENT, read_json, shell_exit_code
from corral.agent.sandbox import linux
from corral.agent.sandbox.config import SANDBOX, SandboxConfig
from corral.agent.sandbox.files import makedirs_nofollow, write_files
from corral.agent.sandbox.plan import minimal, reveals
from corral.agent.shim import load_plan, workload_argv, workload_environment
from corral.agent.volumes import Plan, open_existing

# World-writable directories besides /tmp and /dev/shm that distributions create.
SHARED_WRITABLE = ("/var/tmp", "/run/lock", "/var/lock")
CANNOT_RUN = 126
NOT_FOUND = 127


def reachable(paths: list[str], traversable: Callable[[str], bool]) -> list[str]:
    """The existing directories of `paths`, below /tmp, the replica's user could reach on
    the host: each ancestor searchable by it, and no symlink on the way (a link is followed
    by the bind as root, past directories the user may not enter). /tmp itself never: it is
    every tenant's. A path outside /tmp needs nothing: the replica sees it as the host lets
    its user, through the kernel's own checks."""
    found = []
    for path in paths:
        pure = PurePosixPath(os.path.normpath(path))
        if not pure.is_absolute() or not _under(str(pure), "/tmp") or str(pure) == "/tmp":
            continue
        if not os.path.isdir(pure) or os.path.realpath(pure) != str(pure):
            continue
        if all(traversable(str(a)) for a in [*reversed(pure.parents), pure]):
            found.append(str(pure))
    return found


def _open_exactly(path: str) -> int | None:
    """`path` opened (O_PATH) if it still resolves to itself: no symlink swapped in between
    the check and the open."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if os.readlink(f"/proc/self/fd/{fd}") != path:
        os.close(fd)
        return None
    return fd


def traversable_by(uid: int, gid: int) -> Callable[[str], bool]:
    """Whether `uid:gid` (no supplementary groups) may search a directory, as the host says."""

    def check(directory: str) -> bool:
        try:
            st = os.stat(directory)
        except OSError:
            return True  # absent: nothing to hide it behind; the bind will say what is wrong
        if st.st_uid == uid:
            return bool(st.st_mode & 0o100)
        if st.st_gid == gid:
            return bool(st.st_mode & 0o010)
        return bool(st.st_mode & 0o001)

    return check


def _bind(fd: int, leaf: str) -> None:
    """Bind the directory or file open as `fd` onto `leaf`, creating its mount point."""
    target = Path(leaf)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        target.mkdir(exist_ok=True)
    else:
        target.touch(exist_ok=True)
    linux.mount(f"/proc/self/fd/{fd}", leaf, None, linux.MS_BIND | linux.MS_REC)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _open_volumes(config: SandboxConfig, plan: Plan | None) -> dict[str, int]:
    """Each volume's directory, opened without following a link (volumes.py), keyed by where
    the replica sees it: its spec's path, or for a pod's working directory its host path
    (so that the path is the same on every node, for IDEs that remember it)."""
    opened: dict[str, int] = {}
    if plan is None:
        return opened
    try:
        for mount in plan.mounts:
            opened[mount.path] = open_existing(
                Path(plan.root), plan.workspace, mount.name, config.uid
            )
        work = plan.work_host()
        if plan.work and work:
            opened[work] = open_existing(Path(plan.root), plan.workspace, plan.work, config.uid)
    except BaseException:
        for fd in opened.values():
            os.close(fd)
        raise
    return opened


def _bind_volumes(volumes: dict[str, int]) -> None:
    """Bind each volume's directory at its path, read-write, once the rest of the view is
    built: a missing mount point is created there as root, 0755, empty, without following a
    link. Below a tmpfs of the view (/var/tmp, a blocked directory) it exists in the view
    only; elsewhere (say /data) it stays on the host as an empty directory, the volume only
    ever seen inside the replica."""
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Outer paths first: a volume inside another's path is mounted inside it.
        for where in sorted(volumes, key=lambda p: len(PurePosixPath(p).parts)):
            try:
                target = makedirs_nofollow(root, PurePosixPath(where).relative_to("/"))
            except OSError as exc:
                raise OSError(f"volume mount point {where}: {exc.strerror or exc}") from None
            try:
                source = volumes[where]
                linux.mount(
                    f"/proc/self/fd/{source}", f"/proc/self/fd/{target}", None, linux.MS_BIND
                )
            finally:
                os.close(target)
    finally:
        os.close(root)
        for fd in volumes.values():
            os.close(fd)


def build_view(config: SandboxConfig, plan: Plan | None = None) -> None:
    """The replica's filesystem: private mounts, its own /proc, /tmp and /dev/shm, and only
    its own directories below the ones its user may not traverse; its volumes at their
    paths, and a pod's working directory at its host path."""
    # Its own System V IPC and POSIX message queues too: shared memory segments of one
    # tenant are not another's to attach, nor outlive the replica.
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC)
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    needed = config.needed()
    # Opened now, in this namespace (a bind's source must be one of its mounts) and before
    # any tmpfs or the private /tmp hides them.
    handles = {leaf: os.open(leaf, os.O_PATH | os.O_CLOEXEC) for leaf in set(needed)}
    volumes = _open_volumes(config, plan)
    work = plan.work_host() if plan is not None else None
    if work is not None:
        # Revealed like the replica's own directories (below a blocked one, say the
        # agent's state), but from the descriptor opened without following links.
        needed.append(work)
        handles[work] = os.dup(volumes[work])
    shown: dict[str, int] = {}  # the spec's own directories below /tmp (see reachable)
    for host in reachable(config.host_paths, traversable_by(config.uid, config.gid)):
        fd = _open_exactly(host)
        if fd is not None:
            shown[host] = fd
    tmp = os.open(config.tmp, os.O_PATH | os.O_CLOEXEC)
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    linux.mount("proc", "/proc", "proc", flags)
    linux.mount(f"/proc/self/fd/{tmp}", "/tmp", None, linux.MS_BIND | linux.MS_REC)
    os.close(tmp)
    # Needed paths under /tmp (a test's, or a laptop's CORRAL_HOME) are now hidden by the
    # replica's own /tmp: bound back in it, below directories of ours.
    in_tmp = minimal(PurePosixPath(leaf) for leaf in needed if _under(leaf, "/tmp"))
    for path in in_tmp:
        _bind(handles[str(path)], str(path))
    for where, fd in shown.items():
        # Read-only: the host's /tmp is shared by every tenant, and a writable view of it
        # would let one leave files (or links) there for another.
        _bind(fd, where)
        linux.mount(
            "none",
            where,
            None,
            linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
        )
        os.close(fd)
    others = [leaf for leaf in needed if not _under(leaf, "/tmp")]
    for reveal in reveals(others, traversable_by(config.uid, config.gid)):
        linux.mount("tmpfs", reveal.blocked, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
        for leaf in reveal.leaves:
            _bind(handles[leaf], leaf)
    for fd in handles.values():
        os.close(fd)
    private = linux.MS_NOSUID | linux.MS_NODEV
    if os.path.isdir("/dev/shm"):
        # NCCL and torch's DataLoader workers share memory here: private, not small.
        linux.mount("tmpfs", "/dev/shm", "tmpfs", private, "mode=1777")
    # The other directories every user may write: private too, or one tenant could leave
    # files (or symlinks) there for another.
    for shared in SHARED_WRITABLE:
        if os.path.isdir(shared) and not os.path.islink(shared):
            linux.mount("tmpfs", shared, "tmpfs", private, "mode=1777")
    if os.path.isdir("/dev/mqueue"):
        # This IPC namespace's own message queues, not the host's.
        linux.mount("mqueue", "/dev/mqueue", "mqueue", private | linux.MS_NOEXEC)
    _bind_volumes(volumes)


def drop_privileges(config: SandboxConfig) -> None:
    os.setgroups([])
    os.setgid(config.gid)
    os.setuid(config.uid)
    linux.no_new_privileges()
    if os.geteuid() == 0 or os.getuid() == 0:
        raise PermissionError("still root after setuid")


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    pass


def _fail(code: int, message: str) -> int:
    sys.stdout.write(f"corral: {message}\n")
    sys.stdout.flush()
    return code


def run(replica_dir: Path) -> int:
    try:
        config = SandboxConfig.load(replica_dir / SANDBOX)
        assignment = read_json(replica_dir / ASSIGNMENT)
        if assignment is None:
            raise ValueError(f"{ASSIGNMENT} is missing")
        plan = load_plan(replica_dir)
        # Before the drop: the environment builder's plan (workdir.json) is root's. The
        # uploaded tree itself is in the working directory already (the shim copied it).
        argv = workload_argv(replica_dir, assignment)
        build_view(config, plan)
        drop_privileges(config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _fail(CANNOT_RUN, f"cannot confine the replica: {exc}")
    work = plan.work_host() if plan is not None else None
    cwd = Path(assignment.get("working_dir") or work or config.work)
    try:
        cwd.mkdir(parents=True, exist_ok=True)
        write_files(cwd, assignment.get("files") or {})
        if config.checkpoint_dir and os.path.isabs(config.checkpoint_dir):
            Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        return _fail(CANNOT_RUN, f"cannot prepare the replica: {exc}")
    # Built now that this process is the workspace's user: the user's own variables
    # (PYTHONPATH, LD_PRELOAD, ...) only ever reach the user's own processes.
    volume_env = plan.environment(confined=True) if plan is not None else {}
    env = workload_environment(replica_dir, assignment, os.environ, volume_env)
    env.update(config.user_env())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)
    try:
        # Same process group as this init: the agent signals the group.
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        return _fail(NOT_FOUND, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    except OSError as exc:
        return _fail(CANNOT_RUN, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return CANNOT_RUN  # the workload was reaped elsewhere: cannot happen
        except InterruptedError:
            continue
        if pid == proc.pid:
            return shell_exit_code(os.waitstatus_to_exitcode(status))


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m corral.agent.sandbox.init REPLICA_DIR", file=sys.stderr)
        return 2
    return run(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
