"""corral: one AI cloud over all of a team's GPU machines."""

__version__ = "0.1.0"
