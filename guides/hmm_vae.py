"""The HMM-VAE's frame-wise guide (Ebbers et al. 2017): one amortized Gaussian per frame.

.. math:: q(z_{1:T} \\mid x_{1:T}) = \\prod_t \\mathcal{N}(z_t;\\, \\mu_\\phi(x_t),
          \\operatorname{diag}\\sigma^2_\\phi(x_t)),

one MLP applied to every frame, all frames at once. The guide samples only the continuous latents,
one site ``z`` of shape ``(N, T, Z)`` (event ``(T, Z)``, step ``t`` masked with ``mask[:, t]``);
the model sums its units out exactly (models/hmm_vae.py), so the pair is fit with the plain
``elbo`` objective (``objective_name``). Its draws are made one step at a time
(:class:`StepwiseNormal`), the same numbers at a seed as a guide with one site per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.models.vrnn import as_steps
from pyrovae.registry import register_guide

__all__ = ["HMMVAEGuide", "StepwiseNormal"]


@register_guide("hmm-vae")
class HMMVAEGuide(EncoderGuide):
    """q(z_t | x_t) for every frame, from one MLP.

    >>> guide = HMMVAEGuide(x_dim=5, z_dim=2, hidden_dims=(8,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(3, 4, 5))
    >>> trace.nodes["z"]["value"].shape
    torch.Size([3, 4, 2])
    """

    model_name = "hmm-vae"
    objective_name = "elbo"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 8
        hidden_dims: Tuple[int, ...] = (128,)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z_t | x_t) for frames ``x`` ``(..., D)``: a diagonal Normal, batch shape ``x``'s leading dims."""
        loc, raw = self.encoder(x).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-3)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The means of q(z_t | x_t), ``(..., Z)``."""
        return self.encode(x).loc

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        q = self.encode(x)  # batch (N, T, Z)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, StepwiseNormal(q.loc, q.scale).mask(mask.unsqueeze(-1)).to_event(2))


class StepwiseNormal(dist.Normal):
    """A diagonal Normal over ``(..., T, Z)`` whose draws are made one step ``t`` at a time: the
    same numbers as ``T`` draws of ``(..., Z)`` in turn (a frame-wise guide's draws at a seed do
    not depend on whether its steps are one site or ``T``)."""

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        step = shape[:-2] + shape[-1:]
        eps = torch.stack([torch.empty(step, dtype=self.loc.dtype, device=self.loc.device).normal_()
                           for _ in range(shape[-2])], -2)
        return self.loc + eps * self.scale
