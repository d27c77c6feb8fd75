"""The working directory a job or pod takes with it: which one (the spec's `workdir`,
--workdir, or by default the current directory when it is a project), packed, uploaded,
and named in the spec by its digest before the spec is submitted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from corral.cli.output import CliError, err, esc

if TYPE_CHECKING:
    from pydantic import BaseModel

    from corral.client import Client
    from corral.client.artifacts import Uploaded
    from corral.client.workdir import PackedTree

    S = TypeVar("S", bound=BaseModel)

# What makes a directory a project: then `corral job run` there sends it by default.
PROJECT_MARKERS = (".git", "pyproject.toml", "requirements.txt", "setup.py", ".corralignore")
# Below this much to send, a progress bar would only flash.
PROGRESS_BYTES = 4_000_000
DEFAULT_NOTE = "default: this directory is a project; --no-workdir to not send it"
DIGEST_PREFIX = "sha256:"


def is_project(directory: Path) -> bool:
    return any((directory / marker).exists() for marker in PROJECT_MARKERS)


def relative_to_file(spec_file: str | None, workdir: str | None) -> str | None:
    """A spec file's `workdir` is relative to the file's directory, as a compose file's
    build context is: the job file works from wherever it is run."""
    if spec_file is None or workdir is None or workdir.startswith(DIGEST_PREFIX):
        return workdir
    expanded = os.path.expanduser(workdir)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(spec_file)), expanded))


def send_workdir(
    client: Client,
    spec: S,
    *,
    flag: str | None,
    off: bool,
    home: Path,
    workspace: str | None = None,
    cwd: Path | None = None,
) -> S:
    """`spec` with its working directory uploaded and named by digest (or without one).

    flag: --workdir; off: --no-workdir; workspace: where the spec will be submitted
    (the client's by default). Prints one line saying what was sent."""
    if off and flag is not None:
        raise CliError("--workdir and --no-workdir: give one of them", code=2)
    if off:
        return spec.model_copy(update={"workdir": None}) if _get(spec, "workdir") else spec
    here = Path.cwd() if cwd is None else cwd
    chosen = flag if flag is not None else _get(spec, "workdir")
    default = False
    if chosen is None:
        if _get(spec, "working_dir") is not None or not is_project(here):
            return spec
        chosen, default = ".", True
    if chosen.startswith(DIGEST_PREFIX):
        return spec  # an uploaded tree, named by its digest: nothing to send
    tree = _pack(here / os.path.expanduser(chosen), home, "--workdir" if flag else "workdir")
    _check_environment_files(spec, tree)
    uploaded = _upload(client, tree, workspace)
    _say(tree, uploaded.digest, uploaded.uploaded_bytes, default)
    return spec.model_copy(update={"workdir": DIGEST_PREFIX + uploaded.digest})


def _get(spec: BaseModel, name: str) -> str | None:
    value = getattr(spec, name, None)
    return value if isinstance(value, str) else None


def _pack(path: Path, home: Path, named: str) -> PackedTree:
    from corral.client.workdir import WorkdirError, cache_dir_for, display, pack_workdir

    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise CliError(f"{named}: {display(path)} {what}; expected a directory to send", code=2)
    console = err()
    try:
        if console.is_terminal:
            with console.status(f"packing {esc(display(path))}…"):
                return pack_workdir(path, cache_dir=cache_dir_for(home))
        return pack_workdir(path, cache_dir=cache_dir_for(home))
    except WorkdirError as exc:
        raise CliError(f"{named}: {exc}", code=2) from None


def _check_environment_files(spec: BaseModel, tree: PackedTree) -> None:
    """The environment's files travel in the working directory: say so now if one does not,
    rather than let the node find out."""
    from corral.client.workdir import display

    env = getattr(spec, "environment", None)
    if env is None:
        return
    present = {f.path for f in tree.manifest.files}
    wanted = {"environment.requirements": env.requirements, "environment.uv_lock": env.uv_lock}
    for field, rel in wanted.items():
        if isinstance(rel, str) and os.path.normpath(rel) not in present:
            raise CliError(
                f"{field}: {rel} is not among the files sent from {display(tree.root)}",
                code=2,
                hint="is it missing, or left out by a .gitignore or .corralignore?",
            )


def _upload(client: Client, tree: PackedTree, workspace: str | None) -> Uploaded:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    from corral.client.artifacts import upload_tree
    from corral.client.workdir import display

    console = err()
    if not console.is_terminal:
        return upload_tree(client, tree, workspace=workspace)
    bar = Progress(
        TextColumn(f"uploading {esc(display(tree.root))}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("upload", total=None)

    def progress(sent: int, total: int) -> None:
        if total >= PROGRESS_BYTES and not bar.live.is_started:
            bar.start()
        bar.update(task, completed=sent, total=total)

    try:
        return upload_tree(client, tree, workspace=workspace, progress=progress)
    finally:
        bar.stop()


def _say(tree: PackedTree, digest: str, uploaded: int, default: bool) -> None:
    from corral.client.workdir import display, human_bytes

    line = (
        f"workdir: {esc(display(tree.root))} → {DIGEST_PREFIX}{digest[:8]} "
        f"({tree.files:,} files, {human_bytes(tree.total_bytes)}; "
        f"uploaded {human_bytes(uploaded)})"
    )
    if default:
        line += f" [dim]({DEFAULT_NOTE})[/]"
    err().print(line, soft_wrap=True)  # one line, however narrow the terminal
