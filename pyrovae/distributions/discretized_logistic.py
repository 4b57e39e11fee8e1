"""The discretized logistic mixture of PixelCNN++ (Salimans, Karpathy, Chen, Kingma 2017) for
grey levels ``x in {0, 1, ..., B - 1}`` (``B = num_bins``, 256 for 8-bit images).

Each value is mapped to the centre of its bin on [-1, 1], ``c(x) = 2 x / (B - 1) - 1``, bins of
half-width ``1 / (B - 1)``. With logistic CDF :math:`\\sigma((y - \\mu_k) / s_k)` per component,

.. math::
    P(x) = \\sum_k \\pi_k \\begin{cases}
        \\sigma\\big((c(x) + \\tfrac{1}{B-1} - \\mu_k) / s_k\\big) & x = 0 \\\\
        1 - \\sigma\\big((c(x) - \\tfrac{1}{B-1} - \\mu_k) / s_k\\big) & x = B - 1 \\\\
        \\sigma\\big((c(x) + \\tfrac{1}{B-1} - \\mu_k) / s_k\\big)
            - \\sigma\\big((c(x) - \\tfrac{1}{B-1} - \\mu_k) / s_k\\big) & \\text{otherwise,}
    \\end{cases}

so the edge bins take the tails (-inf, first edge] and [last edge, inf) and the B probabilities
sum to one exactly. The difference of sigmoids is computed in log space without the
approximation PixelCNN++ uses for tiny bins:
``log(sigmoid(a) - sigmoid(b)) = a + log(-expm1(b - a)) - softplus(a) - softplus(b)`` for a > b.

References

[1] Salimans, Karpathy, Chen, Kingma. PixelCNN++: Improving the PixelCNN with Discretized
    Logistic Mixture Likelihood and Other Modifications. ICLR 2017, arXiv:1701.05517
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all


class DiscretizedLogisticMixture(TorchDistribution):
    """A mixture of ``K`` discretized logistics over ``{0, ..., num_bins - 1}``, one per
    batch element: parameters of shape ``batch_shape + (K,)``, event shape ``()`` (use
    ``.to_event(1)`` for an image of independent pixels given their parameters).

    :param torch.Tensor logits: mixture weights' logits, ``(..., K)``.
    :param torch.Tensor locs: component locations on the [-1, 1] scale, ``(..., K)``.
    :param torch.Tensor log_scales: component log-scales, ``(..., K)`` (clamped below at -7).
    :param int num_bins: number of grey levels (256 for 8 bits).

    >>> d = DiscretizedLogisticMixture(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    >>> d.log_prob(torch.arange(256.).unsqueeze(-1)).exp().sum(0)
    tensor([1.0000, 1.0000, 1.0000])
    """

    arg_constraints = {"logits": constraints.real, "locs": constraints.real, "log_scales": constraints.real}
    has_rsample = False
    MIN_LOG_SCALE = -7.0

    def __init__(self, logits, locs, log_scales, num_bins: int = 256, validate_args=None):
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        logits, locs, log_scales = broadcast_all(logits, locs, log_scales)
        self.logits, self.locs = logits, locs
        self.log_scales = log_scales.clamp(min=self.MIN_LOG_SCALE)
        self.num_bins = int(num_bins)
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_bins - 1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.logits.shape[-1:]
        new = self._get_checked_instance(DiscretizedLogisticMixture, _instance)
        new.logits, new.locs = self.logits.expand(shape), self.locs.expand(shape)
        new.log_scales, new.num_bins = self.log_scales.expand(shape), self.num_bins
        super(DiscretizedLogisticMixture, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log P_k(value)`` for each component: shape ``broadcast(value, batch) + (K,)``."""
        half = 1.0 / (self.num_bins - 1)
        x = value.unsqueeze(-1)
        centred = 2.0 * x * half - 1.0 - self.locs
        inv_s = torch.exp(-self.log_scales)
        upper = inv_s * (centred + half)  # a: standardized upper edge
        lower = inv_s * (centred - half)  # b: standardized lower edge
        log_cdf_upper = F.logsigmoid(upper)  # x = 0: P = sigma(a)
        log_sf_lower = -F.softplus(lower)  # x = B - 1: P = 1 - sigma(b)
        log_mid = upper + torch.log(-torch.expm1(lower - upper)) - F.softplus(upper) - F.softplus(lower)
        out = torch.where(x <= 0, log_cdf_upper, torch.where(x >= self.num_bins - 1, log_sf_lower, log_mid))
        return out

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return torch.logsumexp(F.log_softmax(self.logits, -1) + self.component_log_prob(value), -1)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
        loc = self.locs.expand(shape + self.locs.shape[-1:]).gather(-1, k).squeeze(-1)
        log_s = self.log_scales.expand(shape + self.locs.shape[-1:]).gather(-1, k).squeeze(-1)
        u = torch.rand(shape, dtype=loc.dtype, device=loc.device).clamp(1e-5, 1 - 1e-5)
        y = loc + log_s.exp() * (torch.log(u) - torch.log1p(-u))
        return torch.round((y + 1.0) / 2.0 * (self.num_bins - 1)).clamp(0, self.num_bins - 1)

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean ``sum_x x P(x)``, summed over the bins one at a time."""
        total = torch.zeros(self.batch_shape, dtype=self.locs.dtype, device=self.locs.device)
        for b in range(self.num_bins):
            value = torch.full(self.batch_shape, float(b), dtype=self.locs.dtype, device=self.locs.device)
            total = total + b * self.log_prob(value).exp()
        return total
