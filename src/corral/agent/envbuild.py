"""A replica's Python environment and setup commands, built on the node with uv, before its
workload: `python -I -m corral.agent.envbuild <plan json> -- argv...`. Standard library
only, apart from the `uv` package (the binary it ships).

The shim wraps the workload's argv with `wrap_argv` when the spec has `environment:` or
`setup:`; the wrapper then runs inside the sandbox as the workspace's user, in the replica's
working directory, its output the replica's first log lines:

1. the environment's key is the sha256 of what it is built from: the Python request, the
   requirement lines (or the bytes of the requirements file and of the files it includes
   with -r/-c), uv.lock and the pyproject.toml beside it, the index URL, uv's version,
   the platform and any UV_* variable of the replica's environment. The environment lives
   at `$HOME/.cache/corral/envs/<key>` (HOME is the workspace's home on the node: one
   cache per workspace and node, never shared across tenants) and is complete once
   `.corral-ready` exists in it. A warm start reads and hashes the inputs, sees the marker
   and runs nothing else: uv is not even started.
2. a cold one takes `<key>.lock` (flock: two replicas of a gang build once, the second
   waits and then finds it ready), builds in place (a virtualenv is not relocatable):
   `uv venv --python X`, then `uv sync --frozen` of the lock (the project and its
   workspace members are not installed: their code is the working directory, which changes
   without changing the key), then `uv pip install -r` of the requirements. When the node
   is given an index (the control plane's wheelhouse, for nodes that cannot reach PyPI),
   requirements are installed `--index-url` it, and a lock is exported (its pins and
   hashes) and installed from it, since a frozen sync would download from the lock's URLs.
   A failed build removes the directory, writes `<status dir>/error.txt` ("the
   environment could not be built: <uv's error, the resolver's message>", which the shim
   makes the replica's error) and exits 2: a user error, not a retry.
3. `setup:` runs once per node and (environment key, setup text), with `bash -e` (the
   first failing command fails it), the environment's bin first on PATH; a marker
   `$HOME/.cache/corral/setup/<hash>.done` under an flock says it has run.
4. the workload is exec'd in this process (same pid, for the shim) with VIRTUAL_ENV set
   and the environment's bin first on PATH.

Python: `python: "3.11"` is handed to uv, which prefers interpreters already on the node
(and ones it installed before) and downloads one only when none fits; on a node that
cannot reach the internet, that download fails with uv's message as the build's error.
`UV_PYTHON_DOWNLOADS=never` in the job's env forbids it. Without `python:`, the
environment uses the Python that runs corral (the one `python3` is in a replica).
The environment has no pip: `uv pip install` in `setup:` installs into it (uv is on the
replica's PATH, beside the Python that runs corral).

`CORRAL_UV` names another uv binary to use (a node's own); its path, size and mtime stand
in for the version in the key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

READY = ".corral-ready"
INLINE_REQUIREMENTS = ".corral-requirements.txt"
LOCK_REQUIREMENTS = ".corral-lock-requirements.txt"
ERROR_FILE = "error.txt"
MAX_ERROR_BYTES = 1000  # what the shim reads of error.txt
TAIL_LINES = 40  # clipped to MAX_ERROR_BYTES, keeping the end
FAILED = 2
NOT_FOUND = 127
CANNOT_RUN = 126
UV_ENV = "CORRAL_UV"
PROGRESS_FILE_ENV = "CORRAL_PROGRESS_FILE"  # as layout.py names it; its directory is status/
PLAN_PIECE = 64 * 1024
KEY_VERSION = 1  # bump when what goes into the key, or how an environment is built, changes
_PYTHON = re.compile(r"^3(\.\d{1,2}){0,2}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Failure(Exception):
    """The wrapper cannot go on: `message` goes to error.txt, `code` is the exit status."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Environment(NamedTuple):
    python: str | None = None
    requirements: str | tuple[str, ...] | None = None
    uv_lock: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Environment | None:
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ValueError("environment: expected an object")
        unknown = set(data) - {"python", "requirements", "uv_lock"}
        if unknown:
            raise ValueError(f"environment: unexpected field {sorted(unknown)[0]!r}")
        python = data.get("python")
        if python is not None and not (isinstance(python, str) and _PYTHON.match(python)):
            raise ValueError(f'environment.python: expected a version like "3.11", not {python!r}')
        requirements = data.get("requirements")
        if isinstance(requirements, str):
            requirements = _relative(requirements, "environment.requirements")
        elif isinstance(requirements, list):
            if not all(
                isinstance(line, str) and line.strip() and "\n" not in line for line in requirements
            ):
                raise ValueError("environment.requirements: expected non-empty single lines")
            requirements = tuple(requirements)
        elif requirements is not None:
            raise ValueError("environment.requirements: expected a file name or a list of lines")
        lock = data.get("uv_lock")
        if lock is not None:
            if not isinstance(lock, str):
                raise ValueError("environment.uv_lock: expected a file name")
            lock = _relative(lock, "environment.uv_lock")
        env = cls(python=python, requirements=requirements, uv_lock=lock)
        return None if env == cls() else env


class Plan(NamedTuple):
    environment: Environment | None
    setup: str | None
    index_url: str | None
    status_dir: str | None

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        if not isinstance(data, dict):
            raise ValueError("plan: expected a JSON object")
        setup = data.get("setup")
        if setup is not None and not isinstance(setup, str):
            raise ValueError("setup: expected a string")
        index_url = data.get("index_url")
        if index_url is not None and not isinstance(index_url, str):
            raise ValueError("index_url: expected a string")
        status_dir = data.get("status_dir")
        if status_dir is not None and not isinstance(status_dir, str):
            raise ValueError("status_dir: expected a string")
        return cls(
            Environment.from_json(data.get("environment")), setup or None, index_url, status_dir
        )


def _relative(value: str, field: str) -> str:
    if not value or value.startswith("/") or "\0" in value or ".." in value.split("/"):
        raise ValueError(f"{field} must be a relative path inside the working directory")
    return value


def wrap_argv(
    assignment: Mapping[str, Any],
    argv: list[str],
    index_url: str | None,
    *,
    status_dir: str | None = None,
) -> list[str]:
    """The argv that builds the assignment's environment, runs its setup, then execs `argv`;
    `argv` itself when there is neither. `status_dir` (where error.txt goes) defaults, in
    the wrapper, to the directory of $CORRAL_PROGRESS_FILE."""
    environment = assignment.get("environment") or None
    setup = assignment.get("setup") or None
    if environment is None and setup is None:
        return list(argv)
    plan = {
        "environment": environment,
        "setup": setup,
        "index_url": index_url,
        "status_dir": status_dir,
    }
    text = json.dumps(plan)  # ASCII: a character is a byte
    # Linux refuses an argument over 128 KiB (MAX_ARG_STRLEN); `setup` alone may be 64 KiB
    # and the requirement lines more, so a long plan travels in pieces.
    pieces = [text[i : i + PLAN_PIECE] for i in range(0, len(text), PLAN_PIECE)]
    return [sys.executable, "-I", "-m", "corral.agent.envbuild", *pieces, "--", *argv]


# --- the key ------------------------------------------------------------------------------


class Inputs(NamedTuple):
    key: str
    describe: str  # for the log: "python 3.11, requirements.txt"


def uv_identity() -> str:
    """What stands for uv's version in the key, found without running uv (a warm start must
    not): the uv package's dist-info name, or an override binary's path, size and mtime."""
    override = os.environ.get(UV_ENV)
    try:
        if not override:
            import uv

            site = os.path.dirname(os.path.dirname(uv.__file__))
            found = sorted(
                name
                for name in os.listdir(site)
                if name.startswith("uv-") and name.endswith(".dist-info")
            )
            if found:
                return " ".join(found)  # uv-0.13.9.dist-info
        binary = override or _find_uv()
        st = os.stat(binary)
    except (ImportError, OSError) as exc:
        raise Failure(f"the environment could not be built: uv is not available: {exc}") from None
    return f"{os.path.realpath(binary)}:{st.st_size}:{st.st_mtime_ns}"


def _read(workdir: Path, name: str, field: str) -> bytes:
    try:
        return (workdir / name).read_bytes()
    except FileNotFoundError:
        raise Failure(
            f"the environment could not be built: {field}: no file {name!r} in the working "
            "directory"
        ) from None
    except OSError as exc:
        raise Failure(
            f"the environment could not be built: {field}: cannot read {name!r}: "
            f"{exc.strerror or exc}"
        ) from None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+)(\S+)")
MAX_INCLUDED_FILES = 100


def _requirement_files(workdir: Path, name: str) -> dict[str, str]:
    """The sha256 of the requirements file and of the files it includes (`-r`, `-c`,
    relative to the including file, as pip and uv read them), by path in the working
    directory: a changed constraints file is another environment too."""
    found: dict[str, str] = {}
    pending = [name]
    while pending and len(found) < MAX_INCLUDED_FILES:
        current = pending.pop()
        if current in found:
            continue
        data = _read(workdir, current, "environment.requirements")
        found[current] = _sha(data)
        for line in data.decode(errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match is None or "://" in match.group(1):
                continue
            included = os.path.normpath(os.path.join(os.path.dirname(current), match.group(1)))
            if not included.startswith(("/", "..")):  # outside the tree: not ours to hash
                pending.append(included)
    return found


def inputs(env: Environment, index_url: str | None, workdir: Path) -> Inputs:
    """The environment's key and a short description, from what it is built from."""
    parts: dict[str, Any] = {
        "v": KEY_VERSION,
        "index_url": index_url,
        "uv": uv_identity(),
        "platform": [sys.platform, os.uname().machine],
        "uv_env": sorted((k, v) for k, v in os.environ.items() if k.startswith("UV_")),
    }
    describe: list[str] = []
    if env.python is not None:
        parts["python"] = env.python
        describe.append(f"python {env.python}")
    else:
        # The Python that runs corral: its version and where it is (a venv's base).
        parts["python"] = {"default": platform.python_version(), "base": sys.base_prefix}
        describe.append(f"python {platform.python_version()}")
    if isinstance(env.requirements, str):
        parts["requirements"] = {"files": _requirement_files(workdir, env.requirements)}
        describe.append(env.requirements)
    elif env.requirements is not None:
        parts["requirements"] = {"lines": list(env.requirements)}
        count = len(env.requirements)
        describe.append(f"{count} requirement{'s' if count != 1 else ''}")
    if env.uv_lock is not None:
        lock_dir = os.path.dirname(env.uv_lock)
        parts["uv_lock"] = {
            "lock": _sha(_read(workdir, env.uv_lock, "environment.uv_lock")),
            "pyproject": _sha(
                _read(workdir, os.path.join(lock_dir, "pyproject.toml"), "environment.uv_lock")
            ),
        }
        describe.append(env.uv_lock)
    key = _sha(json.dumps(parts, sort_keys=True).encode())
    return Inputs(key=key, describe=", ".join(describe))


# --- running things -----------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(f"corral: {line}\n")
    sys.stdout.flush()


def _tee(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> tuple[int, list[str]]:
    """Runs argv with its output copied into ours (the replica's log); returns its exit
    status (128+N for signal N) and its last non-empty lines."""
    import subprocess  # not on a warm start's path

    tail: deque[str] = deque(maxlen=TAIL_LINES)
    out = sys.stdout.buffer
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.write(raw)
            out.flush()
            text = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            if text.strip():
                tail.append(text)
        code = proc.wait()
    return (128 - code if code < 0 else code), list(tail)


@contextlib.contextmanager
def _locked(path: Path, waiting: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_marker(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _ready(env_dir: Path) -> bool:
    # The interpreter link is checked too: a venv whose base Python went away is rebuilt.
    return (env_dir / READY).is_file() and (env_dir / "bin" / "python").exists()


def _home() -> Path:
    home = os.environ.get("HOME")
    if not home or not os.path.isabs(home):
        raise Failure("the environment could not be built: HOME is not set to a directory")
    return Path(home)


def _cache_dir(*parts: str) -> Path:
    """`$HOME/.cache/corral/<parts>`, each directory made 0700 (a laptop's HOME may be
    readable by others; a replica's is not)."""
    path = _home()
    for part in (".cache", "corral", *parts):
        path = path / part
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise Failure(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def _uv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # The node's own certificate store, as pip and curl there use: a fleet behind a TLS
    # proxy or a private index with its own CA trusts it already (uv's default is a bundle
    # of its own). A job may still say UV_SYSTEM_CERTS=false.
    env.setdefault("UV_SYSTEM_CERTS", "true")
    env.update(extra or {})
    return env


def _build_failed(tail: list[str], what: str) -> Failure:
    """uv's own error (from its `error:` line on: the resolver's message), else its last
    lines."""
    start = max((i for i, line in enumerate(tail) if line.startswith("error:")), default=0)
    lines = tail[start:]
    if lines and lines[0].startswith("error:"):
        lines[0] = lines[0].removeprefix("error:").strip()
    detail = "\n".join(lines) if lines else f"{what} failed with no output"
    return Failure(f"the environment could not be built: {detail}")


def _uv(uv: str, args: Sequence[str], *, cwd: Path, extra: Mapping[str, str] | None = None) -> None:
    try:
        code, tail = _tee([uv, *args], cwd=cwd, env=_uv_env(extra))
    except OSError as exc:
        raise Failure(
            f"the environment could not be built: cannot run uv ({uv}): {exc.strerror or exc}"
        ) from None
    if code != 0:
        raise _build_failed(tail, f"uv {args[0]}")


def build(env: Environment, index_url: str | None, uv: str, env_dir: Path, workdir: Path) -> None:
    """Builds the environment at env_dir (which does not exist); raises Failure."""
    python = env.python or sys.executable
    _uv(uv, ["venv", "--no-config", "--python", python, str(env_dir)], cwd=workdir)
    interpreter = str(env_dir / "bin" / "python")
    index = ["--index-url", index_url] if index_url else []
    if env.uv_lock is not None:
        project = workdir / (os.path.dirname(env.uv_lock) or ".")
        if index_url is None:
            # Exactly the lock: its versions, hashes and the files' own URLs.
            _uv(
                uv,
                ["sync", "--frozen", "--no-install-workspace", "--python", interpreter],
                cwd=project,
                extra={"UV_PROJECT_ENVIRONMENT": str(env_dir)},
            )
        else:
            # A frozen sync downloads from the URLs in the lock, which an air-gapped node
            # cannot reach: the lock's pins and hashes, installed from the wheelhouse.
            pinned = env_dir / LOCK_REQUIREMENTS
            _uv(
                uv,
                [
                    "export",
                    "--quiet",
                    "--frozen",
                    "--no-emit-workspace",
                    "--no-header",
                    "--format",
                    "requirements-txt",
                    "--output-file",
                    str(pinned),
                ],
                cwd=project,
            )
            _uv(
                uv,
                [
                    "pip",
                    "install",
                    "--no-config",
                    "--python",
                    interpreter,
                    *index,
                    "--no-deps",
                    "-r",
                    str(pinned),
                ],
                cwd=project,
            )
    if env.requirements is not None:
        if isinstance(env.requirements, str):
            requirements = str(workdir / env.requirements)
        else:
            inline = env_dir / INLINE_REQUIREMENTS
            inline.write_text("\n".join(env.requirements) + "\n", encoding="utf-8")
            requirements = str(inline)
        _uv(
            uv,
            ["pip", "install", "--no-config", "--python", interpreter, *index, "-r", requirements],
            cwd=workdir,
        )


def ensure_environment(plan: Plan, workdir: Path) -> Path | None:
    """The ready environment's directory (built now, or found), None without one."""
    env = plan.environment
    if env is None:
        return None
    found = inputs(env, plan.index_url, workdir)
    short = found.key[:12]
    envs = _cache_dir("envs")
    env_dir = envs / found.key
    if _ready(env_dir):
        say(f"environment {short} from cache")
        return env_dir
    with _locked(envs / f"{found.key}.lock", f"waiting for environment {short} (building)…"):
        if _ready(env_dir):
            say(f"environment {short} from cache")
            return env_dir
        if env_dir.exists() or env_dir.is_symlink():
            _remove(env_dir)  # what a killed build left
        say(f"building environment {short} ({found.describe})…")
        started = time.monotonic()
        try:
            build(env, plan.index_url, _find_uv(), env_dir, workdir)
        except BaseException:
            _remove(env_dir)
            raise
        seconds = time.monotonic() - started
        _write_marker(
            env_dir / READY,
            {
                "key": found.key,
                "inputs": found.describe,
                "built_at": time.time(),
                "seconds": round(seconds, 3),
            },
        )
        say(f"environment {short} ready in {seconds:.1f} s")
    return env_dir


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def run_setup(setup: str, key: str | None, env: Mapping[str, str], workdir: Path) -> None:
    """Runs `setup` unless it has already run on this node for this environment."""
    digest = _sha(f"{key or 'none'}\0{setup}".encode())
    setups = _cache_dir("setup")
    done = setups / f"{digest}.done"
    if done.is_file():
        say(f"setup {digest[:12]} already done on this node")
        return
    with _locked(setups / f"{digest}.lock", f"waiting for setup {digest[:12]} (running)…"):
        if done.is_file():
            say(f"setup {digest[:12]} already done on this node")
            return
        say(f"running setup {digest[:12]} (once per node and environment)…")
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        started = time.monotonic()
        try:
            code, tail = _tee([shell, "-e", "-c", setup], cwd=workdir, env=env)
        except OSError as exc:
            raise Failure(f"setup could not start: {exc.strerror or exc}") from None
        if code != 0:
            lines = "\n".join(tail)
            raise Failure(f"setup failed with exit code {code}" + (f": {lines}" if lines else ""))
        seconds = time.monotonic() - started
        _write_marker(done, {"setup": digest, "seconds": round(seconds, 3), "at": time.time()})
        say(f"setup {digest[:12]} done in {seconds:.1f} s")


# --- the wrapper --------------------------------------------------------------------------


def _find_uv() -> str:
    override = os.environ.get(UV_ENV)
    if override:
        return override
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, OSError) as exc:
        raise Failure(f"the environment could not be built: uv is not installed: {exc}") from None


def _status_dir(plan: Plan | None) -> str | None:
    if plan is not None and plan.status_dir:
        return plan.status_dir
    progress = os.environ.get(PROGRESS_FILE_ENV)
    return os.path.dirname(progress) if progress else None


def clip(message: str, limit: int = MAX_ERROR_BYTES) -> str:
    """At most `limit` bytes: the message's first line, then as much of its end as fits
    (the resolver's conclusion is at the end)."""
    data = message.encode()
    if len(data) <= limit:
        return message
    head, _, rest = message.partition("\n")
    head_bytes = head.encode()[: limit // 2]
    room = limit - len(head_bytes) - len("\n…\n".encode())
    tail = rest.encode()[-room:] if room > 0 else b""
    return head_bytes.decode(errors="ignore") + "\n…\n" + tail.decode(errors="ignore")


ENVIRONMENT_FILE = "environment"  # in the status dir: the environment's path, for sessions


def write_environment(status_dir: str | None, env_dir: Path) -> None:
    """Say where the environment is, so that `ssh` into the pod (or `job exec`) gets it on
    PATH too (agent/sessions/launch.py reads it)."""
    _write_status(status_dir, ENVIRONMENT_FILE, str(env_dir))


def write_error(status_dir: str | None, message: str) -> None:
    say(message)
    _write_status(status_dir, ERROR_FILE, clip(message))


def _write_status(status_dir: str | None, name: str, text: str) -> None:
    """A file of the replica's status directory (its user's), never through a link."""
    if not status_dir:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(status_dir, name), flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        say(f"cannot write {name}: {exc.strerror or exc}")


def _split(args: Sequence[str]) -> tuple[str, list[str]]:
    """The plan (its pieces joined) and the workload's argv."""
    if "--" not in args[1:]:
        raise ValueError("usage: python -m corral.agent.envbuild <plan json>... -- argv...")
    end = args.index("--", 1)
    if end == len(args) - 1:
        raise ValueError("usage: python -m corral.agent.envbuild <plan json>... -- argv...")
    return "".join(args[:end]), list(args[end + 1 :])


def main(args: Sequence[str] | None = None) -> int:
    plan: Plan | None = None
    try:
        text, argv = _split(sys.argv[1:] if args is None else args)
        try:
            plan = Plan.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan: not JSON: {exc}") from None
    except ValueError as exc:
        write_error(_status_dir(plan), f"the environment could not be built: {exc}")
        return FAILED
    workdir = Path.cwd()
    env = dict(os.environ)
    try:
        env_dir: Path | None = None
        key: str | None = None
        if plan.environment is not None:
            env_dir = ensure_environment(plan, workdir)
            assert env_dir is not None
            key = env_dir.name
            env["VIRTUAL_ENV"] = str(env_dir)
            env["PATH"] = os.pathsep.join(
                p for p in (str(env_dir / "bin"), env.get("PATH", "")) if p
            )
            env.pop("PYTHONHOME", None)
            write_environment(_status_dir(plan), env_dir)
        if plan.setup is not None:
            run_setup(plan.setup, key, env, workdir)
    except Failure as failure:
        write_error(_status_dir(plan), failure.message)
        return failure.code
    except OSError as exc:  # the node's side (a full disk): still one line, not a traceback
        write_error(_status_dir(plan), f"the environment could not be prepared: {exc}")
        return FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as exc:
        code, reason = NOT_FOUND, exc.strerror or str(exc)
    except OSError as exc:
        code, reason = CANNOT_RUN, exc.strerror or str(exc)
    write_error(_status_dir(plan), f"cannot run {argv[0]!r}: {reason}")
    return code


if __name__ == "__main__":
    sys.exit(main())
