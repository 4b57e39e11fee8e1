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

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from pyrovae.distributions import VonMisesFisher
from pyrovae.guides.base import EncoderGuide
from pyrovae.registry import register_guide


@register_guide("vmf")
class VonMisesFisherGuide(EncoderGuide):
    """An MLP encoder x -> (mean direction, concentration) of a vMF over the site ``z``.

    The options of :class:`~pyrovae.guides.base.EncoderGuide` (``z_dim``, default 10, is the
    latent's ambient dimension: z lies on S^(z_dim-1), so z_dim >= 2), and

    :param float fixed_kappa: a constant concentration (Xu & Durrett); None learns it.

    >>> guide = VonMisesFisherGuide(x_dim=64, z_dim=3)
    >>> q = guide.encode(torch.zeros(2, 64))
    >>> q.batch_shape, q.event_shape
    (torch.Size([2]), torch.Size([3]))
    """

    model_name = "svae"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 10
        fixed_kappa: Optional[float] = None

        def __post_init__(self):
            super().__post_init__()
            if self.z_dim < 2:
                raise ValueError(f"a vMF guide needs z_dim >= 2 (z lies on S^(z_dim-1)), got {self.z_dim}")
            if self.fixed_kappa is not None and not self.fixed_kappa > 0:
                raise ValueError(f"fixed_kappa must be positive (or None to learn it), got {self.fixed_kappa}")

    def encoder_outputs(self) -> int:
        fixed_kappa = self.options.fixed_kappa
        self.fixed_kappa = None if fixed_kappa is None else float(fixed_kappa)
        return self.z_dim if fixed_kappa is not None else self.z_dim + 1

    def encode(self, x: torch.Tensor) -> VonMisesFisher:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        out = self.encoder(x)
        loc = F.normalize(out[..., :self.z_dim], dim=-1)
        if self.fixed_kappa is None:
            kappa = F.softplus(out[..., self.z_dim]) + 1
        else:
            kappa = out.new_full(out.shape[:-1], self.fixed_kappa)
        return VonMisesFisher(loc, kappa)

