"""The deep Markov model's structured guide (Krishnan et al. 2017, "ST-R").

.. math::
    r_t = \\operatorname{GRU}_{\\leftarrow}(x_t, r_{t+1}), \\qquad
    h_t = \\tfrac12(\\tanh(W z_{t-1} + b) + r_t), \\qquad
    q(z_t \\mid z_{t-1}, x_{t:T}) = \\mathcal{N}(\\mu(h_t), \\operatorname{diag}\\sigma^2(h_t)).

The backward GRU runs over each sequence's real steps only (the sequence is reversed within its
length, so padding never reaches r_t). The latents are one site ``z`` ``(N, T, Z)``, a
:class:`~pyrovae.models.dmm.GaussianChain` drawn step by step, each ``z_t`` masked with
``mask[:, t]``. Pairs with models/dmm.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.guides.base import EncoderGuide
from pyrovae.models.dmm import GaussianChain
from pyrovae.models.vrnn import as_steps, reverse_within_lengths
from pyrovae.nn import check_positive
from pyrovae.registry import register_guide

__all__ = ["DMMGuide", "reverse_within_lengths"]


@register_guide("dmm")
class DMMGuide(EncoderGuide):
    """q(z_t | z_{t-1}, x_{t:T}) from a backward GRU combined with z_{t-1}.

    :param int rnn_dim: hidden size of the backward GRU over x_{t:T}.

    >>> guide = DMMGuide(x_dim=5, z_dim=2, rnn_dim=8)
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(3, 4, 5))
    >>> trace.nodes["z"]["value"].shape
    torch.Size([3, 4, 2])
    """

    model_name = "dmm"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = ()
        rnn_dim: int = 64

        def __post_init__(self):
            super().__post_init__()
            check_positive(rnn_dim=self.rnn_dim)

    def encoder_outputs(self) -> Optional[int]:
        return None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.rnn = nn.GRU(o.x_dim, o.rnn_dim, batch_first=True)
        self.z_to_h = nn.Linear(o.z_dim, o.rnn_dim)
        self.loc = nn.Linear(o.rnn_dim, o.z_dim)
        self.scale = nn.Linear(o.rnn_dim, o.z_dim)
        self.z_q_init = nn.Parameter(torch.zeros(o.z_dim))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        r, _ = self.rnn(reverse_within_lengths(x, mask))
        r = reverse_within_lengths(r, mask)  # r[:, t] summarises x_{t:len}
        # the steps taken apart once: indexing r[:, t] at each step would cost, in the backward
        # pass, a zero-filled gradient of all of r per step
        r_steps = r.unbind(1)

        def step(z_prev, t):  # q(z_t | z_{t-1}, x_{t:T}): one step t, or the steps of a slice t at once
            h = 0.5 * (torch.tanh(self.z_to_h(z_prev)) + (r[:, t] if isinstance(t, slice) else r_steps[t]))
            return self.loc(h), F.softplus(self.scale(h)) + 1e-4

        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, GaussianChain(step, self.z_q_init, mask))
