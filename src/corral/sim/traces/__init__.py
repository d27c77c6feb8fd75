"""Loaders for public GPU cluster traces; each returns a `LoadedTrace`."""

from corral.sim.traces.base import LoadedTrace
from corral.sim.traces.openb import load_openb_jobs, load_openb_nodes
from corral.sim.traces.philly import load_philly_csv, write_philly_csv

__all__ = [
    "LoadedTrace",
    "load_openb_jobs",
    "load_openb_nodes",
    "load_philly_csv",
    "write_philly_csv",
]
