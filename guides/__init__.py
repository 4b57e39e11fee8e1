"""Amortized guides (posterior families), registered by name."""

from pyrovae.guides.diag import DiagNormalGuide

__all__ = ["DiagNormalGuide"]
