"""The HMM-VAE's frame-wise guide (Ebbers et al. 2017): one amortized Gaussian per frame.

.. math:: q(z_{1:T} \\mid x_{1:T}) = \\prod_t \\mathcal{N}(z_t;\\, \\mu_\\phi(x_t),
          \\operatorname{diag}\\sigma^2_\\phi(x_t)),

one MLP applied to every frame. The guide samples only the continuous ``z_t`` (masked with
``mask[:, t]``); the model's units ``s_t`` are summed out exactly by the ``enum`` objective, the
pair's default (``objective_name``). Pairs with models/hmm_vae.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from pyrovae.guides.base import EncoderGuide
from pyrovae.models.vrnn import as_steps
from pyrovae.registry import register_guide

__all__ = ["HMMVAEGuide"]


@register_guide("hmm-vae")
class HMMVAEGuide(EncoderGuide):
    """q(z_t | x_t) for every frame, from one MLP.

    >>> guide = HMMVAEGuide(x_dim=5, z_dim=2, hidden_dims=(8,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(3, 4, 5))
    >>> trace.nodes["z_3"]["value"].shape
    torch.Size([3, 2])
    """

    model_name = "hmm-vae"
    objective_name = "enum"

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
        q = self.encode(x)  # batch (N, T)
        with pyro.plate("data", x.shape[0]):
            for t in range(x.shape[1]):
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"{self.site}_{t}", dist.Normal(q.loc[:, t], q.scale[:, t]).to_event(1))
