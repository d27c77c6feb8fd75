"""The per-replica shim: `python -m corral.agent.shim <replica_dir>`. Standard library only.

Like containerd-shim or conmon, it sits between the agent and one workload so that the
workload outlives the agent: the agent may restart (or crash) and a new agent adopts the
shim from `shim.json`. The shim

1. prepares the working directory: copies an uploaded tree into it from the node's cache
   (workdir.json: workdir.py; into a pod's persistent one only what is not there yet),
   writes `assignment.files` into it (never through a symlink), and makes the replica's
   volumes (volumes.json: volumes.py) for the workspace's user; unconfined, where nothing
   can be mounted, it names them in CORRAL_VOLUME_<NAME> and, where it can, puts a symlink
   at the spec's path. A spec with `environment:` or `setup:` gets its argv wrapped by
   envbuild.py (built as the workload's user, inside the sandbox); one with `image:` runs
   in a container of the node's runtime (runtimes.py) instead of the sandbox's init,
2. runs `assignment.argv` in its own process group, stdout and stderr appended to output.log,
   with CORRAL_PROGRESS_FILE naming status/progress.json in the replica's directory,
   or, when the agent wrote a `sandbox.json`, runs the sandbox's init in a new PID
   namespace instead, which confines the workload (sandbox/README.md) and runs it,
3. records pids and start times in shim.json,
4. waits, then kills whatever is left of the workload's process group (like a container
   whose init exits) and writes exit.json: exit_code (signal N is 128+N), finished_at and,
   when the workload could not even start, an `error` (exit code 127: not found, 126: any
   other reason it could not be started); after a non-zero exit, what the workload left in
   `status/error.txt` (the environment build's reason) is the error.

SIGTERM, SIGINT and SIGHUP sent to the shim are passed on to the workload's process group,
so that whoever kills the shim still gets an exit.json.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from corral.agent.imagerun import Container, NoRuntime, container
from corral.agent.layout import (
    ASSIGNMENT,
    EXIT,
    OUTPUT,
    PROGRESS_FILE_ENV,
    SHIM,
    WORK,
    process_start_time,
    progress_path,
    read_json,
    shell_exit_code,
    write_json_atomic,
)
from corral.agent.sandbox.config import SANDBOX, SandboxConfig
from corral.agent.sandbox.files import ensure_owned_dir, read_small_nofollow, write_files
from corral.agent.volumes import VOLUMES, Plan, ensure, env_name, open_existing
from corral.agent.workdir import CodePlan, WorkdirError, load_code_plan, materialize

NOT_FOUND = 127
CANNOT_RUN = 126
ERROR_FILE = "error.txt"  # in status/: a failed environment build's reason (envbuild.py)
MAX_ERROR_BYTES = 1000


def run(replica_dir: Path) -> int:
    # The agent runs with umask 077 for its own files; the workload gets the usual one.
    os.umask(0o022)
    if (replica_dir / EXIT).exists():
        return 0  # already finished: a replica runs once
    with open(replica_dir / OUTPUT, "ab", buffering=0) as log:
        try:
            assignment = read_json(replica_dir / ASSIGNMENT)
            if assignment is None:
                raise ValueError(f"{ASSIGNMENT} is missing")
            sandbox = _sandbox(replica_dir)
            argv, cwd, env = _prepare(replica_dir, assignment, sandbox, log)
            container = _container(replica_dir, assignment, argv, cwd, sandbox)
        except NoRuntime as exc:
            return _cannot_start(replica_dir, log, None, str(exc))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _cannot_start(replica_dir, log, CANNOT_RUN, f"cannot prepare the replica: {exc}")
        if container is not None:
            argv, cwd, env = container.argv, cwd, dict(os.environ)
        elif sandbox is not None:
            # The init that confines the workload; it becomes PID 1 of a namespace of its own.
            try:
                from corral.agent.sandbox import linux

                linux.unshare(linux.CLONE_NEWPID)
            except OSError as exc:
                message = f"cannot confine the replica: {exc}"
                return _cannot_start(replica_dir, log, CANNOT_RUN, message)
            # -I: no PYTHON* variables, no user site, no script directory on sys.path.
            argv = [sys.executable, "-I", "-m", "corral.agent.sandbox.init", str(replica_dir)]
            cwd = replica_dir
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,
            )
        except FileNotFoundError as exc:
            message = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            return _cannot_start(replica_dir, log, NOT_FOUND, message)
        except OSError as exc:
            message = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            return _cannot_start(replica_dir, log, CANNOT_RUN, message)
    shim_pid = os.getpid()
    write_json_atomic(
        replica_dir / SHIM,
        {
            "shim_pid": shim_pid,
            "shim_start_time": process_start_time(shim_pid),
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_time": process_start_time(proc.pid),
            "started_at": time.time(),
        },
    )
    _forward_signals(proc.pid)
    returncode = proc.wait()
    _kill_group(proc.pid)
    if container is not None:
        container.stop()
    code = shell_exit_code(returncode)
    info: dict[str, Any] = {"exit_code": code, "finished_at": time.time()}
    error = _workload_error(replica_dir) if code != 0 else None
    if error:
        info["error"] = error
    write_json_atomic(replica_dir / EXIT, info)
    return 0


def _workload_error(replica_dir: Path) -> str | None:
    """What the workload (the environment wrapper) wrote to status/error.txt: its own
    directory, so never followed if a link, never read past MAX_ERROR_BYTES."""
    try:
        raw = read_small_nofollow(progress_path(replica_dir).parent / ERROR_FILE, MAX_ERROR_BYTES)
    except OSError:
        return None
    text = raw.decode("utf-8", "replace").strip() if raw else ""
    return text or None


def _sandbox(replica_dir: Path) -> SandboxConfig | None:
    path = replica_dir / SANDBOX
    return SandboxConfig.load(path) if path.exists() else None


def load_plan(replica_dir: Path) -> Plan | None:
    """The replica's volumes as the agent resolved them, if it has any."""
    data = read_json(replica_dir / VOLUMES)
    return None if data is None else Plan.from_json(data)


def _prepare_volumes(plan: Plan, sandbox: SandboxConfig | None) -> None:
    """Create each volume directory for the workspace's user (unconfined: this one's)."""
    uid = sandbox.uid if sandbox is not None else None
    gid = sandbox.gid if sandbox is not None else None
    for relative in plan.relatives():
        os.close(ensure(Path(plan.root), plan.workspace, relative, uid, gid))


def _link_volumes(plan: Plan, log: BinaryIO) -> None:
    """Unconfined: no bind mount is possible, so a symlink at each path where one can be
    made (left on the host afterwards, pointing at the volume), else a line saying where the
    volume is. $CORRAL_VOLUME_<NAME> names it either way."""
    for mount in plan.mounts:
        path = Path(mount.path)
        if path.is_symlink() and os.readlink(path) == mount.host:
            continue  # an earlier replica's
        if not os.path.lexists(path) and os.access(path.parent, os.W_OK):
            with contextlib.suppress(OSError):
                path.symlink_to(mount.host, target_is_directory=True)
                continue
        line = (
            f"corral: volume {mount.name} is {mount.host}, not at {mount.path}: this agent does "
            f"not confine replicas, nothing is mounted (${env_name(mount.name)} names it)\n"
        )
        log.write(line.encode())


def workload_argv(replica_dir: Path, assignment: dict[str, Any]) -> list[str]:
    """The assignment's argv, wrapped by the environment builder when the spec has an
    `environment:` or `setup:` (not in a container: the image is its environment)."""
    argv = [str(arg) for arg in assignment["argv"]]
    if not argv:
        raise ValueError("argv is empty")
    if assignment.get("image") or not (assignment.get("environment") or assignment.get("setup")):
        return argv
    from corral.agent.envbuild import wrap_argv

    code = load_code_plan(replica_dir)
    index_url = code.index_url if code is not None else None
    status = str(progress_path(replica_dir).parent)
    return wrap_argv(assignment, argv, index_url, status_dir=status)


def _copy_tree(
    code: CodePlan | None,
    plan: Plan | None,
    default: Path,
    sandbox: SandboxConfig | None,
    log: BinaryIO,
) -> None:
    """Copy the uploaded working directory into the replica's: its own `default` one, or a
    pod's persistent one (only what is missing there: the user's edits win)."""
    if code is None or code.manifest is None or code.blobs is None:
        return
    uid = sandbox.uid if sandbox is not None else None
    gid = sandbox.gid if sandbox is not None else None
    work = plan.work if plan is not None else None
    if plan is not None and work is not None:
        target = open_existing(Path(plan.root), plan.workspace, work, uid)
    else:
        target = os.open(default, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    started = time.monotonic()
    try:
        stats = materialize(
            Path(code.manifest),
            Path(code.blobs),
            target,
            uid=uid,
            gid=gid,
            keep_existing=bool(work),
            # Shared read-only files only where the replica's user is not their owner, and
            # not in a pod's directory, which its user edits (workdir.py).
            links=Path(code.links) if code.links and uid and not work else None,
        )
    except WorkdirError as exc:
        raise ValueError(f"cannot copy the working directory: {exc}") from None
    finally:
        os.close(target)
    kept = f", {len(stats.kept)} already there kept as they are" if stats.kept else ""
    if stats.linked:
        kept += f", {stats.linked} of them read-only links to the node's copy"
    files = f"{stats.files} file" + ("" if stats.files == 1 else "s")
    line = (
        f"corral: working directory sha256:{(code.digest or '')[:12]}: {files} "
        f"({_size(stats.bytes)}) in {time.monotonic() - started:.2f} s{kept}\n"
    )
    log.write(line.encode())


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _prepare(
    replica_dir: Path, assignment: dict[str, Any], sandbox: SandboxConfig | None, log: BinaryIO
) -> tuple[list[str], Path, dict[str, str]]:
    argv = workload_argv(replica_dir, assignment)
    plan = load_plan(replica_dir)
    if plan is not None:
        _prepare_volumes(plan, sandbox)
    code = load_code_plan(replica_dir)
    if code is not None and code.manifest and assignment.get("working_dir"):
        raise ValueError("give workdir or working_dir, not both")
    work = plan.work_host() if plan is not None else None
    cwd = Path(assignment.get("working_dir") or work or replica_dir / WORK)
    files: dict[str, str] = assignment.get("files") or {}
    if sandbox is None:
        progress_path(replica_dir).parent.mkdir(exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        _copy_tree(code, plan, cwd, None, log)
        write_files(cwd, files)
        if plan is not None:
            _link_volumes(plan, log)
    else:
        # As root, the directories the replica's user owns; its files it writes itself,
        # once it is that user (sandbox/init.py).
        home = Path(sandbox.home)
        home.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        owned = [sandbox.work, sandbox.status, sandbox.tmp, sandbox.home]
        if sandbox.workspace_checkpoints:
            Path(sandbox.workspace_checkpoints).parent.mkdir(parents=True, exist_ok=True)
            owned.append(sandbox.workspace_checkpoints)
        for directory in owned:
            ensure_owned_dir(Path(directory), sandbox.uid, sandbox.gid)
        _copy_tree(code, plan, Path(sandbox.work), sandbox, log)
    if sandbox is not None:
        # The init runs as root until it drops to the workspace's user: it gets only what
        # the agent gave this shim. The workload's environment (the user's env, where
        # PYTHONPATH or LD_PRELOAD would run the user's code as root) is built by the init
        # once it is no longer root.
        return argv, cwd, dict(os.environ)
    volume_env = plan.environment(confined=False) if plan is not None else {}
    return argv, cwd, workload_environment(replica_dir, assignment, os.environ, volume_env)


def workload_environment(
    replica_dir: Path,
    assignment: dict[str, Any],
    base: Mapping[str, str],
    volume_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What the workload runs with: `base` (the agent's), then the assignment's env, then
    where its volumes are (CORRAL_VOLUME_<NAME>)."""
    env = dict(base)
    # The Python that runs corral here: `corral.serve` endpoints start with it.
    env["CORRAL_PYTHON"] = sys.executable
    env.update({str(k): str(v) for k, v in (assignment.get("env") or {}).items()})
    env.update(volume_env or {})
    # Set last: the agent reads this very file, so an assignment cannot point it elsewhere.
    env[PROGRESS_FILE_ENV] = os.path.abspath(progress_path(replica_dir))
    return env


def _container(
    replica_dir: Path,
    assignment: dict[str, Any],
    argv: list[str],
    cwd: Path,
    sandbox: SandboxConfig | None,
) -> Container | None:
    """The container command of a replica with `image:`; None without one."""
    if not assignment.get("image"):
        return None
    plan = load_plan(replica_dir)
    # Volumes are mounted at their spec's paths, confined or not; nothing of the host's
    # environment goes in (the image has its own PATH), nor the host's Python.
    volume_env = plan.environment(confined=True) if plan is not None else {}
    env = workload_environment(replica_dir, assignment, {}, volume_env)
    env.pop("CORRAL_PYTHON", None)
    if sandbox is not None:
        env.update(sandbox.user_env())
        # No init will write them: as the workspace's user, as the init would (from inside
        # the directory: the user may not pass through the replica's, which is root's).
        _as_user(sandbox, cwd, lambda: write_files(Path("."), assignment.get("files") or {}))
    return container(replica_dir, assignment, argv, cwd, env, sandbox, plan)


def _as_user(sandbox: SandboxConfig, cwd: Path, work: Callable[[], None]) -> None:
    """Run `work` in `cwd` in a child that is the workspace's user; OSError if it fails."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(sandbox.gid)
            os.setuid(sandbox.uid)
            work()
            code = 0
        except BaseException as exc:
            sys.stderr.write(f"corral: {exc}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"cannot write the replica's files as uid {sandbox.uid}")


def _cannot_start(replica_dir: Path, log: BinaryIO, code: int | None, message: str) -> int:
    log.write(f"corral: {message}\n".encode())
    write_json_atomic(
        replica_dir / EXIT, {"exit_code": code, "finished_at": time.time(), "error": message}
    )
    return 0


def _forward_signals(pgid: int) -> None:
    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal_group(pgid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)


def _kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty
        os.killpg(pgid, signum)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m corral.agent.shim REPLICA_DIR", file=sys.stderr)
        return 2
    return run(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
