"""What a simulation is asked to do: the options `corral sim` and the SDK pass to `run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from corral.sim.policies import POLICY_NAMES, PolicyName
from corral.sim.workload import BurstyDay, SyntheticWorkload
from corral.spec.errors import FieldError, SpecError

TraceFormat = Literal["openb", "philly-csv", "synthetic", "bursty"]
TRACE_FORMATS: tuple[TraceFormat, ...] = ("openb", "philly-csv", "synthetic", "bursty")
FailureName = Literal["llama3"]
SYNTHETIC_DEFAULT_GPUS = 64


@dataclass(frozen=True)
class SimOptions:
    """One simulation.

    The cluster comes from `gpus` (N/8 nodes x 8 H100) or a `cluster` YAML file; for
    `openb` with neither, from the trace's own node list. `fill` turns the run into the
    FGD paper's experiment: jobs drawn from the trace arrive and never leave until their
    GPU demand reaches `fill` x capacity; a job that does not fit on arrival is dropped.

    With `pools` (a pools YAML, sim/supply.py) there is no fixed cluster: the fleet
    autoscaler grows and shrinks the pools (`fixed_pools`: each held at its max instead,
    the baseline). Nodes are billed until the run ends, or `bill_until_s` if later (a
    day's bill for a day's queue). `format="bursty"`: a generated bursty day.
    """

    trace: Path | None = None
    format: TraceFormat = "synthetic"
    gpus: int | None = None
    cluster: Path | None = None
    policy: PolicyName = "corral"
    seed: int = 0
    failures: FailureName | None = None
    plot: Path | None = None
    max_jobs: int | None = None
    checkpoint_interval_s: float | None = 1800.0
    round_s: float = 0.0  # 0: a round at each instant something changed
    estimate_factor: float = 1.0  # runtime estimate told to schedulers = true run time x this
    fill: float | None = None
    synthetic: SyntheticWorkload = field(default_factory=SyntheticWorkload)
    until_s: float | None = None
    pools: Path | None = None
    fixed_pools: bool = False
    bill_until_s: float | None = None
    bursty: BurstyDay = field(default_factory=BurstyDay)

    def check(self) -> None:
        """Raise SpecError naming every option that cannot work."""
        errors: list[FieldError] = []
        if self.format not in TRACE_FORMATS:
            errors.append(FieldError("format", f"expected one of {', '.join(TRACE_FORMATS)}"))
        if self.policy not in POLICY_NAMES:
            errors.append(FieldError("policy", f"expected one of {', '.join(POLICY_NAMES)}"))
        if self.format in ("openb", "philly-csv") and self.trace is None:
            errors.append(FieldError("trace", f"--format {self.format} needs --trace PATH"))
        if self.format == "synthetic" and self.trace is not None:
            errors.append(FieldError("trace", "a trace file needs --format openb|philly-csv"))
        if self.gpus is not None and self.cluster is not None:
            errors.append(FieldError("gpus", "give --gpus N or --cluster FILE, not both"))
        if self.pools is not None and (self.gpus is not None or self.cluster is not None):
            errors.append(FieldError("pools", "give --pools FILE or a cluster, not both"))
        if self.pools is not None and self.failures is not None:
            errors.append(FieldError("failures", "node failures are not simulated with pools"))
        if self.pools is not None and self.fill is not None:
            errors.append(FieldError("fill", "a fill run needs a fixed cluster, not pools"))
        if self.fixed_pools and self.pools is None:
            errors.append(FieldError("fixed_pools", "needs --pools FILE"))
        if self.gpus is not None and self.gpus < 1:
            errors.append(FieldError("gpus", f"expected at least 1, got {self.gpus}"))
        if self.format == "philly-csv" and self.gpus is None and self.cluster is None:
            errors.append(FieldError("gpus", "a Philly trace has no node list: give --gpus N"))
        if self.failures is not None and self.failures != "llama3":
            errors.append(FieldError("failures", "expected llama3 (or none)"))
        if self.max_jobs is not None and self.max_jobs < 1:
            errors.append(FieldError("max_jobs", f"expected at least 1, got {self.max_jobs}"))
        if self.checkpoint_interval_s is not None and self.checkpoint_interval_s <= 0:
            errors.append(FieldError("checkpoint_interval_s", "expected > 0, or None"))
        if self.round_s < 0:
            errors.append(FieldError("round_s", "expected >= 0"))
        if self.estimate_factor <= 0:
            errors.append(FieldError("estimate_factor", "expected > 0"))
        if self.fill is not None and not 0 < self.fill <= 10:
            errors.append(FieldError("fill", "expected a multiple of capacity in (0, 10]"))
        if errors:
            raise SpecError("sim options", errors)
