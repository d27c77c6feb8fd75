"""What a training script tells corral, and where it keeps its checkpoints. Standard library
only: this module is imported inside users' workloads.

```python
import corral.train

ckpt = corral.train.checkpoint_dir()          # survives attempts and nodes
for step in range(start, steps):
    ...
    if step % 100 == 0:
        save(ckpt / f"step-{step}")           # complete before it is reported
        corral.train.report(step, checkpoint_step=step)
    else:
        corral.train.report(step)
```

`report` writes `{"step", "checkpoint_step", "time"}` to the file named by
`CORRAL_PROGRESS_FILE` (set by the corral agent for every replica), replacing it whole, so a
reader never sees half of it. The agent forwards it to the control plane, which uses it to
tell a hung job from a slow one and to account lost work. Outside corral it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["CHECKPOINT_DIR_ENV", "PROGRESS_FILE_ENV", "checkpoint_dir", "report"]

PROGRESS_FILE_ENV = "CORRAL_PROGRESS_FILE"
CHECKPOINT_DIR_ENV = "CORRAL_CHECKPOINT_DIR"


def report(step: int, *, checkpoint_step: int | None = None) -> None:
    """Record that the script has finished `step` (and, if given, has a complete checkpoint
    of `checkpoint_step`). Without `checkpoint_step` the last one reported is kept.

    Cheap enough to call every step: one small file written and renamed, no fsync (the
    file is read on this machine; a crash costs at most the latest report).
    """
    _check_step("step", step)
    if checkpoint_step is not None:
        _check_step("checkpoint_step", checkpoint_step)
    target = os.environ.get(PROGRESS_FILE_ENV)
    if not target:
        return
    path = Path(target)
    if checkpoint_step is None:
        checkpoint_step = _previous_checkpoint(path)
    data = {"step": step, "checkpoint_step": checkpoint_step, "time": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def checkpoint_dir(default: str | os.PathLike[str] | None = None) -> Path:
    """The job's checkpoint directory (created if missing): `CORRAL_CHECKPOINT_DIR`, or
    `default` when run outside corral. Raises RuntimeError if neither is there."""
    value = os.environ.get(CHECKPOINT_DIR_ENV) or default
    if not value:
        raise RuntimeError(
            f"{CHECKPOINT_DIR_ENV} is not set: run this under corral, or pass a default "
            "directory to checkpoint_dir()"
        )
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_step(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def _previous_checkpoint(path: Path) -> int | None:
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = previous.get("checkpoint_step") if isinstance(previous, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
