"""The runtime half of each family: numpy loops over sessions. The families' own pipelines
register through edgegen.families; this package holds what they share (base.py) and, until
each family moves into its folder, their modules."""

from ..pipeline import Pipeline

__all__ = ["Pipeline"]
