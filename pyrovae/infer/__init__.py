"""Inference: the per-datapoint importance core and the objectives built on it.

``importance`` runs a pair (guide, then the model replayed on its draws), finds the data
plate and the latent sites, and reduces log-densities to per-datapoint log-weights; every
bound, estimate and diagnostic in the suite calls it. ``objectives`` are the losses fit
minimizes; ``fast_path`` is the one module that reaches into Pyro internals."""

from pyrovae.infer.importance import log_weights
from pyrovae.infer.enum import EnumELBO  # noqa: F401  (the "enum" objective)
from pyrovae.infer.objectives import (
    ELBO, IWAE, FreeBitsELBO, MeanFieldELBO, Objective, RenyiBound, make_objective,
)

__all__ = ["ELBO", "FreeBitsELBO", "IWAE", "MeanFieldELBO", "Objective", "RenyiBound", "log_weights",
           "make_objective"]
