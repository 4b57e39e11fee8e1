"""The guide of the Associative Compression Network (models/acn.py): the diagonal-Gaussian
:math:`q(z \\mid x) = \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag}\\sigma^2_\\phi(x))`, whose means
are also the model's *codes*: :meth:`AcnGuide.bind_model` gives the model this guide to read
them from (the registry's :func:`~pyrovae.registry.pair_guide` calls it wherever the suite
builds a pair by name: ``pyrovae fit``, ``load_run``); the guide stays the owner of its
parameters.

References

[1] Graves, Menick, van den Oord. Associative Compression Networks for Representation Learning.
    arXiv:1804.02476 (2018)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch  # noqa: F401  (the doctest)

import pyro

from pyrovae.errors import UsageError
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.registry import register_guide

__all__ = ["AcnGuide"]


@register_guide("acn")
class AcnGuide(DiagNormalGuide):
    """q(z | x), a diagonal Normal from an MLP; the model's codes are its means.

    Options: the shared encoder options (x_dim, z_dim, hidden_dims, activation, site).

    >>> from pyrovae.models.acn import AssociativeCompressionNetwork
    >>> model = AssociativeCompressionNetwork(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide = AcnGuide(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide.bind_model(model)
    >>> model.codes(torch.zeros(3, 6)).shape
    torch.Size([3, 2])
    """

    model_name = "acn"

    @dataclass
    class Options(DiagNormalGuide.Options):
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = (256,)
        activation: str = "relu"

    def bind_model(self, model) -> None:
        """Let ``model`` (an ``acn``) read its codes from this guide."""
        bind = getattr(model, "bind_guide", None)
        if bind is None:
            raise UsageError(f"guide 'acn' gives its codes to model 'acn', not to {type(model).__name__}; "
                             "use --model acn")
        if model.z_dim != self.z_dim or model.x_dim != self.x_dim:
            raise UsageError(f"guide 'acn' has z_dim {self.z_dim} over x_dim {self.x_dim} but the model has "
                             f"{model.z_dim} over {model.x_dim}; build both with the same sizes")
        bind(self)

    def forward(self, x, index=None, **kwargs):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x))
