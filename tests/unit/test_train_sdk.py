"""corral.train: the progress file and the checkpoint directory a training script sees."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import pytest

import corral.train as train


def progress(path: Path) -> dict[str, object]:
    value = json.loads(path.read_text())
    assert isinstance(value, dict)
    return value


def test_the_public_surface() -> None:
    assert sorted(train.__all__) == [
        "CHECKPOINT_DIR_ENV",
        "PROGRESS_FILE_ENV",
        "checkpoint_dir",
        "report",
    ]


def test_report_writes_step_checkpoint_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "progress.json"
    monkeypatch.setenv("CORRAL_PROGRESS_FILE", str(target))
    before = time.time()
    train.report(7)
    first = progress(target)
    assert first["step"] == 7 and first["checkpoint_step"] is None
    assert isinstance(first["time"], float) and before <= first["time"] <= time.time()
    train.report(10, checkpoint_step=10)
    train.report(11)
    assert (progress(target)["step"], progress(target)["checkpoint_step"]) == (11, 10)
    train.report(20, checkpoint_step=20)
    assert progress(target)["checkpoint_step"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"], "no temporary left"


def test_report_replaces_the_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "progress.json"
    target.write_text("not json")  # whatever was there is not read back as a checkpoint
    monkeypatch.setenv("CORRAL_PROGRESS_FILE", str(target))
    inode = target.stat().st_ino
    train.report(1)
    assert progress(target) == {
        "step": 1,
        "checkpoint_step": None,
        "time": progress(target)["time"],
    }
    assert target.stat().st_ino != inode, "renamed into place, not rewritten in place"


def test_report_without_corral_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_PROGRESS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    train.report(3, checkpoint_step=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_report_refuses_a_step_that_is_not_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        train.report(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_step"):
        train.report(1, checkpoint_step=bad)  # type: ignore[arg-type]


def test_checkpoint_dir_comes_from_corral_and_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_CHECKPOINT_DIR", str(tmp_path / "ckpt" / "job"))
    path = train.checkpoint_dir(default=tmp_path / "ignored")
    assert path == tmp_path / "ckpt" / "job" and path.is_dir()


def test_checkpoint_dir_outside_corral(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CHECKPOINT_DIR", raising=False)
    assert train.checkpoint_dir(tmp_path / "local") == tmp_path / "local"
    with pytest.raises(RuntimeError, match="CORRAL_CHECKPOINT_DIR is not set"):
        train.checkpoint_dir()


def test_the_sdk_imports_nothing_but_the_standard_library() -> None:
    tree = ast.parse(Path(train.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names | {"__future__"}
