"""A mixture-of-diagonal-Gaussians guide with pathwise gradients through the mixture.

.. math:: q_\\phi(z_n \\mid x_n) = \\sum_{k=1}^{K} \\pi_{k}(x_n)\\,
          \\mathcal{N}\\big(z_n;\\ \\mu_{k}(x_n),\\ \\operatorname{diag} \\sigma_{k}^2(x_n)\\big),
          \\qquad \\pi(x) = \\operatorname{softmax}(\\ell_\\phi(x)).

Sampling a component index is not differentiable, yet :math:`E_q[f(z)]` is a smooth
function of the mixture weights, means and scales. Graves [1] obtains its pathwise gradient
by holding fixed the uniforms of the distributional transform (the sequence of conditional
CDFs); :class:`~pyrovae.distributions.DiagNormalMixture` implements it with one triangular
solve per draw. (Pyro's ``MixtureOfDiagNormals`` has a pathwise sampler too, but its
gradient in the logits is biased in pyro-ppl 1.9.2.) The density is exact, so the ELBO,
IWAE and importance-sampled log-likelihoods all apply. A mixture can place mass on several
modes of a multimodal posterior, where a single Gaussian averages them.

References

[1] Graves. Stochastic Backpropagation through Mixture Density Distributions. arXiv:1607.05690
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.distributions import DiagNormalMixture
from pyrovae.nn import check_positive
from pyrovae.registry import register_guide


@register_guide("mixture")
class MixtureGuide(EncoderGuide):
    """An MLP encoder x -> (logits, locs, scales) of K diagonal Gaussians over the site ``z``.

    The options of :class:`~pyrovae.guides.base.EncoderGuide`, and

    :param int num_components: K, the number of mixture components.

    >>> guide = MixtureGuide(x_dim=64, z_dim=2, num_components=3)
    >>> q = guide.encode(torch.zeros(5, 64))
    >>> q.batch_shape, q.event_shape, tuple(q.loc.shape)
    (torch.Size([5]), torch.Size([2]), (5, 3, 2))
    """

    @dataclass
    class Options(EncoderGuide.Options):
        num_components: int = 5

        def __post_init__(self):
            super().__post_init__()
            check_positive(num_components=self.num_components)

    def encoder_outputs(self) -> int:
        self.num_components = self.options.num_components
        return self.num_components * (2 * self.z_dim + 1)

    def encode(self, x: torch.Tensor) -> DiagNormalMixture:
        """q(z | x): batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        out = self.encoder(x)
        k, z = self.num_components, self.z_dim
        logits = out[..., :k]  # (N, K)
        loc, raw_scale = out[..., k:].reshape(out.shape[:-1] + (k, 2 * z)).split(z, dim=-1)  # (N, K, Z) each
        return DiagNormalMixture(loc, F.softplus(raw_scale) + 1e-5, logits)

