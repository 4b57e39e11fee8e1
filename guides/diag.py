"""The amortized diagonal-Gaussian guide of the VAE.

.. math:: q_\\phi(z_n \\mid x_n) = \\mathcal{N}(z_n;\\ \\mu_\\phi(x_n),
          \\operatorname{diag} \\sigma^2_\\phi(x_n)).

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
"""

from __future__ import annotations

from typing import Tuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import MLP, check_positive
from pyrovae.registry import register_guide


@register_guide("diag")
class DiagNormalGuide(EncoderGuide):
    """An MLP encoder x -> (loc, scale) of a diagonal Normal over the latent site ``z``.

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: encoder hidden widths (from x to z).
    :param str activation: encoder nonlinearity.
    :param str site: name of the latent sample site (the model/guide contract).

    >>> guide = DiagNormalGuide(x_dim=64, z_dim=2)
    >>> guide.encode(torch.zeros(3, 64)).event_shape
    torch.Size([2])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Tuple[int, ...] = (200, 200),
        activation: str = "tanh",
        site: str = "z",
    ):
        super().__init__()
        check_positive(x_dim=x_dim, z_dim=z_dim)
        self.x_dim, self.z_dim, self.site = x_dim, z_dim, site
        self.encoder = MLP(x_dim, tuple(hidden_dims), 2 * z_dim, activation)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)

