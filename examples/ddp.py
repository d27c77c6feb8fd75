"""Data-parallel training with PyTorch DDP that survives losing a machine.

Each replica is one process (gloo on the CPU; NCCL is the same code on GPUs). It reads the
torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) that corral
or torchrun sets, trains a small model on synthetic data that depends only on (seed, step,
rank), and every --checkpoint-every steps saves model and optimizer to
$CORRAL_CHECKPOINT_DIR: written to a temporary name, fsynced, renamed into place, so a file
under its final name is always complete. On start it resumes from the newest checkpoint
that loads, which makes a killed-and-restarted run end with exactly the parameters of an
uninterrupted one. It reports every step to corral with corral.train.report.

For tests: --fail-at-step K raises at step K on every attempt (an error in the script);
--hang-at-step K makes one rank sleep forever at step K, once per checkpoint directory (a
hang that a restart cures).

Run alone: python examples/ddp.py --steps 50. Under corral: examples/ddp.yaml.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import corral.train

CHECKPOINT = re.compile(r"^step-(\d{8})\.pt$")
FEATURES = 32
BATCH = 16


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=int(env("DDP_STEPS", "100")))
    p.add_argument("--checkpoint-every", type=int, default=int(env("DDP_CHECKPOINT_EVERY", "10")))
    p.add_argument("--step-time", type=float, default=float(env("DDP_STEP_TIME", "0")))
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, help="default: $CORRAL_CHECKPOINT_DIR")
    p.add_argument("--timeout", type=float, default=60.0, help="collective timeout, seconds")
    p.add_argument("--fail-at-step", type=int, default=None)
    p.add_argument("--fail-rank", type=int, default=None, help="default: every rank")
    p.add_argument("--hang-at-step", type=int, default=None)
    p.add_argument("--hang-rank", type=int, default=0)
    return p.parse_args()


def log(rank: int, message: str) -> None:
    print(f"[rank {rank}] {message}", flush=True)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))


def batch(seed: int, step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # From (seed, step, rank) alone, so a resumed run sees exactly the data it would have.
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + rank)
    x = torch.randn(BATCH, FEATURES, generator=g)
    return x, x.sum(dim=1, keepdim=True) * 0.1


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (temporaries never match), newest first."""
    found = []
    for path in directory.iterdir():
        m = CHECKPOINT.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def load_newest(directory: Path) -> tuple[int, dict[str, object] | None]:
    for step, path in checkpoints(directory):
        try:
            return step, torch.load(path, weights_only=True)
        except Exception as exc:  # a damaged file: an older one will do
            print(f"skipping unreadable checkpoint {path.name}: {exc}", flush=True)
    return 0, None


def save(
    directory: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, keep: int
) -> None:
    final = directory / f"step-{step:08d}.pt"
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)
    for _, old in checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)


def checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)  # deterministic, and fair to the other replicas on a host
    rank = int(os.environ.setdefault("RANK", "0"))
    world = int(os.environ.setdefault("WORLD_SIZE", "1"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    directory = corral.train.checkpoint_dir(args.checkpoint_dir or "checkpoints")
    dist.init_process_group(
        "gloo",
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )
    try:
        return train(args, rank, world, directory)
    finally:
        dist.destroy_process_group()


def train(args: argparse.Namespace, rank: int, world: int, directory: Path) -> int:
    model = make_model(args.seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Rank 0 picks the checkpoint and tells the rest: a straggler of an earlier attempt
    # may still be renaming a newer one into place while the ranks look.
    choice: list[object] = [load_newest(directory)[0] if rank == 0 else None]
    dist.broadcast_object_list(choice, src=0)
    start = int(str(choice[0]))
    if start:
        state = torch.load(directory / f"step-{start:08d}.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        log(rank, f"resuming from step {start}")
        corral.train.report(start, checkpoint_step=start)
    else:
        log(rank, "starting from scratch")
    ddp = DistributedDataParallel(model)
    loss_fn = nn.MSELoss()
    for step in range(start + 1, args.steps + 1):
        if step == args.fail_at_step and args.fail_rank in (None, rank):
            raise RuntimeError(f"injected failure at step {step}")
        if step == args.hang_at_step and rank == args.hang_rank:
            marker = directory / f"hang-at-{step}.done"
            if not marker.exists():
                marker.touch()
                log(rank, f"hanging at step {step}")
                while True:
                    time.sleep(3600)
        x, y = batch(args.seed, step, rank)
        opt.zero_grad()
        loss = loss_fn(ddp(x), y)
        loss.backward()  # gradients are all-reduced here
        opt.step()
        if args.step_time:
            time.sleep(args.step_time)
        saved = None
        if step % args.checkpoint_every == 0 or step == args.steps:
            if rank == 0:
                save(directory, step, model, opt, args.keep)
            dist.barrier()  # nobody reports a checkpoint before it is on disk
            saved = step
            log(rank, f"step {step}: loss {loss.item():.6f}, checkpoint saved")
        corral.train.report(step, checkpoint_step=saved)
    digest = checksum(model)
    if rank == 0:
        summary = {"step": args.steps, "world_size": world, "checksum": digest}
        (directory / "final.json").write_text(json.dumps(summary))
    log(rank, f"done: step {args.steps}, checksum {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
