"""The fleet simulator: a discrete-event loop that drives corral's real scheduler.

from corral.sim import SimOptions, run
report = run(SimOptions(trace=Path("trace.csv"), format="philly-csv", gpus=512))
print(format_table([report]))
"""

from corral.sim.cluster import Cluster, SimNode, gpus_cluster, load_cluster, parse_cluster
from corral.sim.engine import Engine, EngineConfig, Outcome
from corral.sim.failures import LLAMA3_405B, PROFILES, Cause, FailureProfile
from corral.sim.options import SimOptions, TraceFormat
from corral.sim.policies import POLICIES, POLICY_NAMES, Policy, PolicyName
from corral.sim.report import SimReport, build_report, format_table
from corral.sim.runner import run
from corral.sim.state import PlanError
from corral.sim.workload import Job, SyntheticWorkload, fill_workload, synthetic_jobs

__all__ = [
    "LLAMA3_405B",
    "POLICIES",
    "POLICY_NAMES",
    "PROFILES",
    "Cause",
    "Cluster",
    "Engine",
    "EngineConfig",
    "FailureProfile",
    "Job",
    "Outcome",
    "PlanError",
    "Policy",
    "PolicyName",
    "SimNode",
    "SimOptions",
    "SimReport",
    "SyntheticWorkload",
    "TraceFormat",
    "build_report",
    "fill_workload",
    "format_table",
    "gpus_cluster",
    "load_cluster",
    "parse_cluster",
    "run",
    "synthetic_jobs",
]
