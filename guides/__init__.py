"""Amortized guides (posterior families), registered by name."""

from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.flows import PlanarFlowGuide, RadialFlowGuide, SplineFlowGuide
from pyrovae.guides.fullcov import FullCovNormalGuide
from pyrovae.guides.iaf import IAFGuide

__all__ = ["DiagNormalGuide", "FullCovNormalGuide", "IAFGuide", "PlanarFlowGuide", "RadialFlowGuide",
           "SplineFlowGuide"]
