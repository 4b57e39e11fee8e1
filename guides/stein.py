"""An implicit encoder trained by amortized SVGD (Pu et al.).

.. math:: z = f_\\eta(x, \\xi), \\qquad \\xi \\sim \\mathcal{N}(0, I_{noise\\_dim}),

an MLP fed with the datapoint and fresh noise, so :math:`q_\\eta(z \\mid x)` is any
distribution the network can push noise into, with no density. It is trained by the
``stein`` objective (:mod:`pyrovae.infer.stein`), which moves its M particles per
datapoint along the Stein variational gradient of :math:`\\log p(x, z)`.

**A density for evaluation.** Importance-sampled log-likelihoods need a proposal whose
density is known. :meth:`SteinGuide.encode` draws ``density_particles`` particles per
datapoint and returns the diagonal Gaussian with their mean and standard deviation
(floored at 1e-4): a proper density for each datapoint, so ``log_likelihood`` and the
``iwae`` objective, which sample from and score this Gaussian, remain honest
importance-sampling estimates (lower bounds in expectation); they measure the Gaussian
summary of the implicit posterior, not the implicit distribution itself. ``forward``
samples this Gaussian; the ``stein`` objective asks :meth:`SteinGuide.particles`
for the implicit draws instead.

References

[1] Pu, Gan, Henao, Li, Han, Carin. VAE Learning via Stein Variational Gradient Descent.
    arXiv:1707.05435
[2] Liu, Wang. Stein Variational Gradient Descent. arXiv:1608.04471
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import MLP, check_positive
from pyrovae.nn import activation as make_activation
from pyrovae.registry import register_guide


@register_guide("stein")
class SteinGuide(EncoderGuide):
    """An implicit encoder :math:`z = f(x, \\xi)` for the ``stein`` objective.

    The options of :class:`~pyrovae.guides.base.EncoderGuide` (``hidden_dims`` are the widths
    of the network from (x, noise) to z; the noise enters the first layer), and

    :param int noise_dim: dimension of the injected noise (default: z_dim).
    :param int density_particles: particles per datapoint behind the Gaussian of
        :meth:`encode` (evaluation and importance-weighted objectives).

    >>> guide = SteinGuide(x_dim=64, z_dim=2)
    >>> guide.particles(torch.zeros(3, 64), num_particles=5).shape
    torch.Size([5, 3, 2])
    """

    objective_name = "stein"

    @dataclass
    class Options(EncoderGuide.Options):
        noise_dim: Optional[int] = None
        density_particles: int = 64

        def __post_init__(self):
            super().__post_init__()
            if self.noise_dim is not None:
                check_positive(noise_dim=self.noise_dim)
            if not isinstance(self.density_particles, int) or self.density_particles < 2:
                raise ValueError(f"density_particles must be an integer >= 2, got {self.density_particles!r}")

    def encoder_outputs(self) -> None:
        return None  # the implicit network below takes (x, noise)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        x_dim, z_dim, hidden_dims, activation = o.x_dim, o.z_dim, o.hidden_dims, o.activation
        self.noise_dim = z_dim if self.options.noise_dim is None else self.options.noise_dim
        self.density_particles = self.options.density_particles
        first = hidden_dims[0] if hidden_dims else z_dim
        self.embed_x = nn.Linear(x_dim, first)
        self.embed_noise = nn.Linear(self.noise_dim, first, bias=False)
        if hidden_dims:
            self.head = nn.Sequential(make_activation(activation), MLP(first, hidden_dims[1:], z_dim, activation))
        else:
            self.head = nn.Identity()

    def particles(self, x: torch.Tensor, num_particles: int, **kwargs) -> torch.Tensor:
        """``num_particles`` implicit draws per datapoint: shape ``(M,) + x.shape[:-1] + (z_dim,)``."""
        noise = torch.randn((num_particles,) + x.shape[:-1] + (self.noise_dim,), dtype=x.dtype, device=x.device)
        return self.head(self.embed_x(x) + self.embed_noise(noise))

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """The diagonal Gaussian fitted to ``density_particles`` particles of each datapoint."""
        z = self.particles(x, self.density_particles)  # (M, N, Z)
        scale = z.var(0).add(1e-8).sqrt().clamp_min(1e-4)
        return dist.Normal(z.mean(0), scale).to_event(1)

