"""The amortized diagonal-Gaussian guide of the VAE.

.. math:: q_\\phi(z_n \\mid x_n) = \\mathcal{N}(z_n;\\ \\mu_\\phi(x_n),
          \\operatorname{diag} \\sigma^2_\\phi(x_n)).

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.registry import register_guide


@register_guide("diag")
class DiagNormalGuide(EncoderGuide):
    """An MLP encoder x -> (loc, scale) of a diagonal Normal over the latent site ``z``.

    Its options are :class:`~pyrovae.guides.base.EncoderGuide`'s (x_dim, z_dim, hidden_dims,
    activation, site).

    >>> guide = DiagNormalGuide(x_dim=64, z_dim=2)
    >>> guide.encode(torch.zeros(3, 64)).event_shape
    torch.Size([2])
    """

    #: a diagonal Normal: its KL to the standard Normal prior is taken in closed form by
    #: ``meanfield``, the default objective of ``vae`` and ``least-squares-vae``
    closed_form_kl = True

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)

