"""The guide of the robust VAE (models/robust.py): q(z | x) q(tau | x), and the log-likelihood
with tau integrated out, which needs both halves of the pair."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.models.robust import BroadcastGamma, RobustVAE, inverse_softplus
from pyrovae.nn import MLP
from pyrovae.registry import register_guide

__all__ = ["RobustEncoder", "log_likelihood_z_only"]


@register_guide("robust-encoder")
class RobustEncoder(EncoderGuide):
    """q(z | x) q(tau | x) for the ``robust`` model.

    The options of :class:`~pyrovae.guides.base.EncoderGuide` (``hidden_dims`` for the z
    encoder; the reconstruction network g mirrors them).

    >>> guide = RobustEncoder(x_dim=5, z_dim=2, hidden_dims=())
    >>> guide.encode(torch.zeros(3, 5)).event_shape, guide.tau_posterior(torch.zeros(3, 5)).event_shape
    (torch.Size([2]), torch.Size([5]))
    """

    model_name = "robust"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.x_dim
        self.reconstruct = MLP(self.z_dim, tuple(reversed(self.options.hidden_dims)), d, self.options.activation)
        self.raw_shape = torch.nn.Parameter(torch.full((d,), inverse_softplus(1.0)))  # (nu + 1)/2 at nu = 1
        self.raw_rate = torch.nn.Parameter(torch.full((d,), inverse_softplus(0.5)))  # nu/2
        self.raw_precision = torch.nn.Parameter(torch.full((d,), inverse_softplus(1.0)))  # 1 / psi

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x), batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)

    def tau_posterior(self, x: torch.Tensor, z_loc: Optional[torch.Tensor] = None) -> dist.Distribution:
        """q(tau | x): Gamma per entry, its rate growing with the squared residual of the entry."""
        if z_loc is None:
            z_loc = self.encode(x).mean
        residual = x - self.reconstruct(z_loc)
        rate = F.softplus(self.raw_rate) + 0.5 * F.softplus(self.raw_precision) * residual ** 2 + 1e-6
        shape = F.softplus(self.raw_shape) + 1e-3  # (x_dim,): one per dimension
        return BroadcastGamma(shape, rate, rate.shape).to_event(1)

    def forward(self, x: torch.Tensor, **kwargs):
        with pyro.plate("data", x.shape[0]):
            q = self.encode(x)
            z = pyro.sample(self.site, q)
            pyro.sample("tau", self.tau_posterior(x, q.mean))
            return z


@torch.no_grad()
def log_likelihood_z_only(model: RobustVAE, guide: RobustEncoder, x: torch.Tensor, num_samples: int = 1000,
                          batch_size: int = 100) -> torch.Tensor:
    """Importance-sampled ``log p(x)`` per row with tau integrated out exactly (Student-t) and
    ``q(z | x)`` the proposal for z alone: far lower variance than sampling the ``x_dim`` taus too."""
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        q = guide.encode(xb)
        z = q.sample((num_samples,))  # (K, B, z)
        prior = dist.Normal(torch.zeros_like(z), 1.0).to_event(1)
        log_w = model.log_likelihood_given_z(xb, z) + prior.log_prob(z) - q.log_prob(z)
        out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(out)
