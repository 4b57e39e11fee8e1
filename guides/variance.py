"""The guide ``variance-encoder``: the diagonal Gaussian encoder with variance layers
(:mod:`pyrovae.nn.variance`) in its MLP, the guide of ``variance-vae`` (models/variance.py,
which says why no KL is added for the encoder's weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.nn.variance import VarianceMLP, check_variance_layers
from pyrovae.registry import register_guide

__all__ = ["VarianceEncoder"]


@register_guide("variance-encoder")
class VarianceEncoder(EncoderGuide):
    """q(z | x) = N(mu(x), diag sigma(x)^2) from an MLP with variance layers.

    The options of :class:`~pyrovae.guides.base.EncoderGuide` (``activation`` default
    ``relu``), and

    :param tuple encoder_variance_layers: indices of the encoder's linear layers that are
        variance layers (its own name: the CLI gives one flag to an option of the same name in
        the model and the guide).

    >>> guide = VarianceEncoder(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide.encode(torch.ones(3, 6)).event_shape
    torch.Size([2])
    """

    @dataclass
    class Options(EncoderGuide.Options):
        activation: str = "relu"
        encoder_variance_layers: Tuple[int, ...] = (0,)

        def __post_init__(self):
            super().__post_init__()
            self.encoder_variance_layers = tuple(self.encoder_variance_layers)
            check_variance_layers(self.encoder_variance_layers, self.hidden_dims, "encoder_variance_layers")

    def mlp(self, out_dim: int) -> VarianceMLP:
        o = self.options
        return VarianceMLP(self.x_dim, o.hidden_dims, out_dim, o.encoder_variance_layers, o.activation)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        loc, raw = self.encoder(x).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1)

    @torch.no_grad()
    def mean_code(self, x: torch.Tensor, draws: int = 20) -> torch.Tensor:
        """E[mu(x)] over the weight noise, averaged over ``draws`` draws: a point code per row."""
        return torch.stack([self.encode(x).mean for _ in range(draws)]).mean(0)
