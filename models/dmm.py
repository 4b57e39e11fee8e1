"""The deep Markov model (Krishnan, Shalit, Sontag 2017).

A first-order Markov chain of Gaussian latents with a gated transition, each emitting one step:

.. math::
    z_t \\mid z_{t-1} &\\sim \\mathcal{N}(\\mu_\\theta(z_{t-1}), \\operatorname{diag}\\sigma^2_\\theta(z_{t-1})),
        \\qquad z_0 = \\text{a learned vector}, \\\\
    \\mu_\\theta(z) &= (1 - g(z)) \\odot W z + g(z) \\odot h(z), \\qquad g = \\operatorname{sigmoid}(\\cdot),\\\\
    x_t \\mid z_t &\\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} e_\\theta(z_t)).

Unlike the VRNN the observations never feed the generative state: all memory is in z.
The guide (guides/dmm.py) combines a backward RNN over x_{t:T} with z_{t-1} (the paper's
"ST-R" structured guide). Batches ``{"x": (N, T, D), "mask": (N, T)}``; each step's sites are
masked with ``mask[:, t]`` inside a ``pyro.markov`` loop, so padding never enters the loss.

References

[1] Krishnan, Shalit, Sontag. Structured Inference Networks for Nonlinear State Space Models.
    AAAI 2017. arXiv:1609.09869
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyrovae.models.vrnn import as_steps, example_sequences, real_steps
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["DMM", "GatedTransition"]


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): the gated mean (1 - g) * W z + g * h(z) and a softplus scale."""

    def __init__(self, z_dim: int, hidden_dim: int):
        super().__init__()
        self.gate = MLP(z_dim, (hidden_dim,), z_dim, "relu")
        self.proposed = MLP(z_dim, (hidden_dim,), z_dim, "relu")
        self.linear = nn.Linear(z_dim, z_dim)
        self.identity_()
        self.scale = nn.Linear(z_dim, z_dim)

    @torch.no_grad()
    def identity_(self) -> None:
        """The linear part of the mean at the identity, as Krishnan et al.'s code starts it."""
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(self.gate(z))
        proposed = self.proposed(z)
        loc = (1 - gate) * self.linear(z) + gate * proposed
        scale = F.softplus(self.scale(F.relu(proposed))) + 1e-4
        return loc, scale


@register_model("dmm")
class DMM(Model):
    """The deep Markov model: gated Gaussian transitions, Bernoulli emissions.

    :param int x_dim: size of one step's observation.
    :param int z_dim: size of each step's latent state z_t.
    :param int transition_dim: hidden width of the gated transition p(z_t | z_{t-1}).
    :param int emission_dim: hidden width of the emission p(x_t | z_t).

    >>> model = DMM(x_dim=5, z_dim=2, transition_dim=8, emission_dim=8)
    >>> model.generate(num_samples=3, num_steps=7).shape
    torch.Size([3, 7, 5])
    """

    guide_name = "dmm"
    cannot_sample = 'a sequence model: draw sequences with model.generate(num_samples, num_steps)'

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 16
        transition_dim: int = 64
        emission_dim: int = 64

        def __post_init__(self):
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, transition_dim=self.transition_dim,
                           emission_dim=self.emission_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim = o.x_dim, o.z_dim
        self.transition = GatedTransition(o.z_dim, o.transition_dim)
        self.emitter = MLP(o.z_dim, (o.emission_dim, o.emission_dim), o.x_dim, "relu")
        self.z_init = nn.Parameter(torch.zeros(o.z_dim))

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the emission's output bias at the logits of the training keys' frequencies
        over the real steps (``init="burda"``, the default of ``fit``), and put the transition's
        linear part back at the identity that Glorot's layers replaced (docs/sequences.md)."""
        bias_at_data_logits_(self.emitter[-1], real_steps(x, mask))
        self.transition.identity_()

    def prior(self, z_prev: torch.Tensor) -> dist.Distribution:
        loc, scale = self.transition(z_prev)
        return dist.Normal(loc, scale).to_event(1)

    def emission(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self.emitter(z), validate_args=False).to_event(1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        z = self.z_init.expand(x.shape[0], self.z_dim)
        with pyro.plate("data", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", self.prior(z))
                    pyro.sample(f"x_{t}", self.emission(z), obs=x[:, t])

    def example_batch(self, n: int = 16, num_steps: int = 5, seed: int = 0) -> dict:
        return example_sequences(self.x_dim, n, num_steps, seed)

    @torch.no_grad()
    def generate(self, num_samples: int, num_steps: int, mean: bool = False) -> torch.Tensor:
        z = self.z_init.expand(num_samples, self.z_dim)
        steps = []
        for _ in range(num_steps):
            z = self.prior(z).sample()
            px = self.emission(z)
            steps.append(px.mean if mean else px.sample())
        return torch.stack(steps, 1)
