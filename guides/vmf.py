"""The von Mises-Fisher guide of the hyperspherical VAE.

.. math:: q_\\phi(z_n \\mid x_n) = \\mathrm{vMF}(z_n;\\ \\mu_\\phi(x_n),\\ \\kappa_\\phi(x_n)),
          \\qquad \\mu_\\phi = \\frac{m_\\phi(x)}{\\|m_\\phi(x)\\|}, \\quad
          \\kappa_\\phi = \\mathrm{softplus}(k_\\phi(x)) + 1,

on the sphere :math:`S^{z\\_dim-1}`, paired with the uniform prior of the ``svae`` model [1].
With ``fixed_kappa`` the concentration is a constant [2]: the KL to the uniform prior is
then a constant too, so the rate cannot collapse to zero (no posterior collapse), at the
price of a fixed rate. The sampler is :class:`~pyrovae.distributions.VonMisesFisher`'s,
whose ``rsample`` carries unbiased gradients in both the direction and the concentration
(implicit reparameterization), so every objective (``elbo``, ``meanfield``, ``iwae``,
``renyi``, ``stein``) can train this guide.

References

[1] Davidson, Falorsi, De Cao, Kipf, Tomczak. Hyperspherical Variational Auto-Encoders.
    arXiv:1804.00891
[2] Xu, Durrett. Spherical Latent Spaces for Stable Variational Autoencoders. arXiv:1808.10805
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from pyrovae.distributions import VonMisesFisher
from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import MLP, check_positive
from pyrovae.registry import register_guide


@register_guide("vmf")
class VonMisesFisherGuide(EncoderGuide):
    """An MLP encoder x -> (mean direction, concentration) of a vMF over the site ``z``.

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: the latent's ambient dimension (z lies on S^(z_dim-1)); >= 2.
    :param tuple hidden_dims: encoder hidden widths.
    :param str activation: encoder nonlinearity.
    :param str site: name of the latent sample site.
    :param float fixed_kappa: a constant concentration (Xu & Durrett); None learns it.

    >>> guide = VonMisesFisherGuide(x_dim=64, z_dim=3)
    >>> q = guide.encode(torch.zeros(2, 64))
    >>> q.batch_shape, q.event_shape
    (torch.Size([2]), torch.Size([3]))
    """

    model_name = "svae"

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 10,
        hidden_dims: Tuple[int, ...] = (200, 200),
        activation: str = "tanh",
        site: str = "z",
        fixed_kappa: Optional[float] = None,
    ):
        super().__init__()
        check_positive(x_dim=x_dim, z_dim=z_dim)
        if z_dim < 2:
            raise ValueError(f"a vMF guide needs z_dim >= 2 (z lies on S^(z_dim-1)), got {z_dim}")
        if fixed_kappa is not None and not fixed_kappa > 0:
            raise ValueError(f"fixed_kappa must be positive (or None to learn it), got {fixed_kappa}")
        self.x_dim, self.z_dim, self.site = x_dim, z_dim, site
        self.fixed_kappa = None if fixed_kappa is None else float(fixed_kappa)
        out_dim = z_dim if fixed_kappa is not None else z_dim + 1
        self.encoder = MLP(x_dim, tuple(hidden_dims), out_dim, activation)

    def encode(self, x: torch.Tensor) -> VonMisesFisher:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        out = self.encoder(x)
        loc = F.normalize(out[..., :self.z_dim], dim=-1)
        if self.fixed_kappa is None:
            kappa = F.softplus(out[..., self.z_dim]) + 1
        else:
            kappa = out.new_full(out.shape[:-1], self.fixed_kappa)
        return VonMisesFisher(loc, kappa)

