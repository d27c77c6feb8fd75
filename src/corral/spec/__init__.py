"""The public contract: what users write."""

from corral.spec.errors import FieldError, SpecError
from corral.spec.job import JobSpec
from corral.spec.loader import load_job_spec, parse_job_spec
from corral.spec.names import check_name
from corral.spec.resources import GpuRequest, Resources

__all__ = [
    "FieldError",
    "GpuRequest",
    "JobSpec",
    "Resources",
    "SpecError",
    "check_name",
    "load_job_spec",
    "parse_job_spec",
]
