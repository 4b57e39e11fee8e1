"""A mixture of diagonal Gaussians with unbiased pathwise gradients (Graves' method).

.. math:: q(z) = \\sum_{k=1}^K \\pi_k \\prod_{d=1}^D \\mathcal{N}(z_d;\\ \\mu_{kd}, \\sigma_{kd}^2),
          \\qquad \\pi = \\operatorname{softmax}(\\ell).

A draw is taken ancestrally (a component, then its Gaussian). Its gradient is that of the
*distributional transform* of Graves [1]: :math:`u_d = F_d(z_d \\mid z_{<d}; \\theta)`, the
conditional CDFs, map :math:`z` to uniforms (the Rosenblatt transform), and holding
:math:`u` fixed while :math:`\\theta` moves defines :math:`z(\\theta)`. By the implicit
function theorem

.. math:: \\frac{\\partial z}{\\partial \\theta} = -J^{-1} \\frac{\\partial F}{\\partial \\theta},
          \\qquad J = \\frac{\\partial F}{\\partial z} \\ \\text{(lower triangular)},

with :math:`F_d = \\sum_k w^{(d)}_k \\Phi(\\frac{z_d - \\mu_{kd}}{\\sigma_{kd}})` and the
conditional weights :math:`w^{(d)}_k \\propto \\pi_k \\prod_{i<d} \\mathcal{N}(z_i;
\\mu_{ki}, \\sigma_{ki}^2)`; the diagonal of :math:`J` holds the conditional densities
:math:`q(z_d \\mid z_{<d})`. The sample is returned as
:math:`\\bar z - J^{-1}(F - \\bar F)` (bars: no gradient), whose value is :math:`\\bar z`
and whose gradient is exactly this, into the weights, means and scales alike. One batched
triangular solve per draw; no loop over dimensions.

(Pyro's ``MixtureOfDiagNormals`` also has a pathwise sampler, but its gradient with respect
to the logits is biased in pyro-ppl 1.9.2: on a quadratic test function it differs from the
exact gradient by hundreds of standard errors.)

>>> import torch
>>> q = DiagNormalMixture(torch.zeros(4, 3, 2), torch.ones(4, 3, 2), torch.zeros(4, 3))
>>> q.batch_shape, q.event_shape, q.rsample((5,)).shape
(torch.Size([4]), torch.Size([2]), torch.Size([5, 4, 2]))

References

[1] Graves. Stochastic Backpropagation through Mixture Density Distributions. arXiv:1607.05690
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints


class DiagNormalMixture(TorchDistribution):
    """K diagonal Gaussians in D dimensions, mixed: event shape ``(D,)``.

    :param torch.Tensor loc: component means ``(..., K, D)``.
    :param torch.Tensor scale: component standard deviations ``(..., K, D)``.
    :param torch.Tensor logits: mixture logits ``(..., K)``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "logits": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, logits: torch.Tensor, validate_args=None):
        if loc.dim() < 2:
            raise ValueError(f"loc must have shape (..., K, D), got {tuple(loc.shape)}")
        if logits.shape[-1] != loc.shape[-2]:
            raise ValueError(f"logits (..., K) and loc (..., K, D) disagree on K: "
                             f"{tuple(logits.shape)} vs {tuple(loc.shape)}")
        batch_shape = torch.broadcast_shapes(loc.shape[:-2], scale.shape[:-2], logits.shape[:-1])
        k, d = loc.shape[-2:]
        self.loc = loc.expand(batch_shape + (k, d))
        self.scale = scale.expand(batch_shape + (k, d))
        self.logits = logits.expand(batch_shape + (k,))
        super().__init__(batch_shape, torch.Size([d]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagNormalMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        k, d = self.loc.shape[-2:]
        new.loc = self.loc.expand(batch_shape + (k, d))
        new.scale = self.scale.expand(batch_shape + (k, d))
        new.logits = self.logits.expand(batch_shape + (k,))
        super(DiagNormalMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def num_components(self) -> int:
        return self.loc.shape[-2]

    @property
    def mixture_probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.mixture_probs.unsqueeze(-1) * self.loc).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        probs = self.mixture_probs.unsqueeze(-1)
        second = (probs * (self.loc ** 2 + self.scale ** 2)).sum(-2)
        return second - self.mean ** 2

    def _component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """log N(z_d; mu_kd, sigma_kd) per component and coordinate: ``(..., K, D)``."""
        std = (value.unsqueeze(-2) - self.loc) / self.scale
        return -0.5 * std * std - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        per_component = self._component_log_probs(value).sum(-1)  # (..., K)
        return torch.logsumexp(per_component + self.logits.log_softmax(-1), -1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)  # sample + batch + (D,)
        q = self.expand(shape[:-1]) if shape[:-1] != self.batch_shape else self
        with torch.no_grad():
            which = torch.distributions.Categorical(logits=q.logits).sample()  # (...,)
            index = which[..., None, None].expand(shape[:-1] + (1, shape[-1]))
            loc = q.loc.gather(-2, index).squeeze(-2)
            scale = q.scale.gather(-2, index).squeeze(-2)
            z = loc + scale * torch.randn(shape, dtype=loc.dtype, device=loc.device)
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in (q.loc, q.scale, q.logits)):
            return z
        return z - q._implicit_shift(z)

    def _implicit_shift(self, z: torch.Tensor) -> torch.Tensor:
        """``J^{-1} (F - F.detach())``: zero-valued, with gradient ``J^{-1} dF/dtheta`` (z fixed)."""
        std = (z.unsqueeze(-2) - self.loc) / self.scale  # (..., K, D), z has no gradient
        log_n = -0.5 * std * std - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)
        # log w_k^(d) = log pi_k + sum_{i<d} log N(z_i; mu_ki, sigma_ki), normalized over k
        exclusive = torch.cumsum(log_n, -1) - log_n
        log_w = torch.log_softmax(self.logits.log_softmax(-1).unsqueeze(-1) + exclusive, dim=-2)
        cdf = (log_w.exp() * torch.special.ndtr(std)).sum(-2)  # F_d, (..., D)
        with torch.no_grad():
            w = log_w.exp()
            density = torch.logsumexp(log_w + log_n, -2).exp()  # q(z_d | z_<d), J's diagonal
            score = -std / self.scale  # d log N(z_i) / d z_i, (..., K, D)
            a = w * torch.special.ndtr(std)  # (..., K, D)
            # dF_d/dz_i (i < d) = sum_k a_kd s_ki - F_d sum_k w_kd s_ki
            off = a.transpose(-1, -2) @ score - cdf.unsqueeze(-1) * (w.transpose(-1, -2) @ score)
            jacobian = torch.tril(off, -1) + torch.diag_embed(density.clamp_min(torch.finfo(z.dtype).tiny))
        delta = (cdf - cdf.detach()).unsqueeze(-1)
        return torch.linalg.solve_triangular(jacobian, delta, upper=False).squeeze(-1)
