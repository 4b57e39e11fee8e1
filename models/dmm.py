"""The deep Markov model (Krishnan, Shalit, Sontag 2017).

A first-order Markov chain of Gaussian latents with a gated transition, each emitting one step:

.. math::
    z_t \\mid z_{t-1} &\\sim \\mathcal{N}(\\mu_\\theta(z_{t-1}), \\operatorname{diag}\\sigma^2_\\theta(z_{t-1})),
        \\qquad z_0 = \\text{a learned vector}, \\\\
    \\mu_\\theta(z) &= (1 - g(z)) \\odot W z + g(z) \\odot h(z), \\qquad g = \\operatorname{sigmoid}(\\cdot),\\\\
    x_t \\mid z_t &\\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} e_\\theta(z_t)).

Unlike the VRNN the observations never feed the generative state: all memory is in z.
The guide (guides/dmm.py) combines a backward RNN over x_{t:T} with z_{t-1} (the paper's
"ST-R" structured guide). Batches ``{"x": (N, T, D), "mask": (N, T)}``.

**Two sites, the steps batched.** The latents are one site ``z`` ``(N, T, Z)`` (event ``(T, Z)``)
and the observations one site ``x`` ``(N, T, D)``: given the guide's draws, the model's transitions
and emissions at every step are one network call each (:class:`GaussianChain`,
:class:`StepEmission`), not ``T`` calls and ``2 T`` Pyro sites; the guide still draws step by
step, as its posterior needs ``z_{t-1}``, and keeps each step's location and scale for its density.
Step ``t`` is masked with ``mask[:, t]``, so padding never enters the loss. The loss and gradients
are those of the former program of one site per step at the same seed, to float rounding
(tests/models/test_dmm.py).

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
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from pyrovae.models.vrnn import as_steps, example_sequences, real_steps
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["DMM", "GatedTransition", "GaussianChain", "StepEmission"]


#: rows (leading dims x steps) per network call when every step is computed at once
ROWS_PER_CALL = 20_000


def step_blocks(z: torch.Tensor) -> list:
    """Slices that cut ``z`` ``(..., T, Z)`` along its steps into blocks of at most
    :data:`ROWS_PER_CALL` rows (one block when it fits): the networks' activations stay in cache
    (all 193 steps of 100 particles x 20 chorales at once ran 1.3 times slower than step by step)."""
    rows = max(1, z[..., 0, 0].numel())
    size, T = max(1, ROWS_PER_CALL // rows), z.shape[-2]
    return [slice(t, min(t + size, T)) for t in range(0, T, size)]


class StepEmission(TorchDistribution):
    """:math:`\\prod_t p(x_t \\mid z_t)^{m_t}`, each step ``Bernoulli(sigmoid emitter(z_t))``, for
    latents ``z`` ``(..., N, T, Z)``: batch ``(..., N)``, event ``(T, D)``; the emitter runs over
    blocks of steps (:func:`step_blocks`) when the density is computed, and a padded step
    (``m_t = 0``) has none. The same log-density as a masked ``Bernoulli`` of ``emitter(z)``.

    >>> emission = StepEmission(torch.nn.Linear(2, 3), torch.zeros(4, 5, 2), torch.ones(4, 5, dtype=torch.bool), 3)
    >>> emission.batch_shape, emission.event_shape, emission.sample().shape
    (torch.Size([4]), torch.Size([5, 3]), torch.Size([4, 5, 3]))
    """

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 2)

    def __init__(self, emitter, z: torch.Tensor, mask: torch.Tensor, x_dim: int, validate_args=None):
        self.emitter, self.z, self.mask_ = emitter, z, mask
        batch_shape = torch.broadcast_shapes(z.shape[:-2], mask.shape[:-1])
        super().__init__(batch_shape, torch.Size((mask.shape[-1], x_dim)), validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.sigmoid(self.emitter(self.z)).expand(torch.Size(sample_shape) + self.batch_shape + self.event_shape)
            return torch.bernoulli(probs)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` ``(..., N, T, D)`` gives ``(..., N)``."""
        log_p = []
        for steps in step_blocks(self.z):
            logits, x = torch.broadcast_tensors(self.emitter(self.z[..., steps, :]), value[..., steps, :])
            log_p.append(-F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1))
        log_p = torch.cat(log_p, -1) if len(log_p) > 1 else log_p[0]  # (..., N, T)
        return torch.where(self.mask_, log_p, torch.zeros_like(log_p)).sum(-1)


class GaussianChain(TorchDistribution):
    """A first-order Markov chain of diagonal Gaussians over one row's ``T`` steps:
    :math:`\\prod_t \\mathcal{N}(z_t;\\, \\mu_t(z_{t-1}), \\operatorname{diag}\\sigma_t^2(z_{t-1}))^{m_t}`,
    batch ``(N,)``, event ``(T, Z)``, with ``z_0`` given; a padded step (``m_t = 0``) is drawn
    (the chain runs on) but has no density. The DMM's prior (``step`` its transition) and its
    guide's posterior (``step`` also reading the backward RNN at step ``t``) are both one.

    The draws run the chain step by step (``rsample``: one standard normal ``(..., N, Z)`` per
    step, in turn, as one site per step would draw them), and keep each step's location and scale;
    ``log_prob`` of that draw (or of a view of it, such as ``draw.detach()``) reads them back. Any
    other value is scored with every step's transition at once (in blocks of steps,
    :func:`step_blocks`): ``step`` applied to the values shifted by one step.

    :param callable step: ``step(z_prev, t)`` gives ``(loc, scale)`` of step ``t`` (an int) from
        ``z_prev`` ``(..., N, Z)``, or of the steps ``t`` (a slice) at once from ``z_prev``
        ``(..., N, len, Z)``.
    :param torch.Tensor z_0: ``(Z,)`` or ``(..., N, Z)``.
    :param torch.Tensor mask: ``(N, T)`` bool.

    >>> step = lambda z, t: (0.9 * z, torch.ones_like(z))
    >>> chain = GaussianChain(step, torch.zeros(2), torch.ones(3, 4, dtype=torch.bool))
    >>> z = chain.rsample()
    >>> z.shape, bool(torch.allclose(chain.log_prob(z), chain.log_prob(z.clone())))
    (torch.Size([3, 4, 2]), True)
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, step, z_0: torch.Tensor, mask: torch.Tensor, validate_args=None):
        self.step, self.z_0, self.mask_ = step, z_0, mask
        self._draw = None  # (value, loc, scale) of the latest draw
        super().__init__(mask.shape[:-1], torch.Size((mask.shape[-1], z_0.shape[-1])), validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape[-1:]  # (..., N, Z)
        z = self.z_0.expand(shape)
        zs, locs, scales = [], [], []
        for t in range(self.event_shape[0]):
            loc, scale = self.step(z, t)
            eps = torch.empty(torch.broadcast_shapes(loc.shape, scale.shape), dtype=loc.dtype,
                              device=loc.device).normal_()
            z = loc + eps * scale
            zs.append(z), locs.append(loc), scales.append(scale)
        value = torch.stack(zs, -2)  # (..., N, T, Z)
        self._draw = (value, torch.stack(locs, -2), torch.stack(scales, -2))
        return value

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def _is_draw(self, value: torch.Tensor) -> bool:
        draw = self._draw[0] if self._draw is not None else None
        return draw is not None and (value is draw or (
            value.data_ptr() == draw.data_ptr() and value.shape == draw.shape and value.stride() == draw.stride()))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` ``(..., N, T, Z)`` gives ``(..., N)``."""
        if self._is_draw(value):
            _, loc, scale = self._draw
        else:
            z_0 = self.z_0.unsqueeze(-2).expand(value.shape[:-2] + (1, value.shape[-1]))
            z_prev = torch.cat([z_0, value[..., :-1, :]], -2)
            parts = [self.step(z_prev[..., steps, :], steps) for steps in step_blocks(z_prev)]
            loc, scale = (torch.cat([p[i] for p in parts], -2) if len(parts) > 1 else parts[0][i] for i in (0, 1))
        log_p = dist.Normal(loc, scale).log_prob(value).sum(-1)  # (..., N, T)
        return torch.where(self.mask_, log_p, torch.zeros_like(log_p)).sum(-1)


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
    #: torch's layers with the emission's bias at the keys' frequencies: Glorot's layers (``burda``)
    #: cost 3.3 nats per beat at Pyro's example's sizes after 8 epochs, most of it in the model
    #: (docs/sequences.md#the-dmm-against-pyros-example-at-equal-budget)
    default_init = "data"
    #: the KL weight rises from 0 to 1 over the first 1000 steps (``--kl-warmup``), as Krishnan et
    #: al. anneal it: the default fit on the chorales (1000 epochs, K = 1000, paired) gains
    #: +14.2 ± 1.2 and +19.2 ± 1.4 nats per chorale (seeds 0, 1; +0.28 and +0.38 per beat)
    #: (docs/sequences.md#the-dmms-default-kl-warm-up)
    default_objective_options = {"warmup_steps": 1000}

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
        over the real steps (``init="data"``, the default of ``fit``, or ``"burda"``), and put the
        transition's linear part back at the identity that Glorot's layers replace (docs/sequences.md)."""
        bias_at_data_logits_(self.emitter[-1], real_steps(x, mask))
        self.transition.identity_()

    def prior(self, z_prev: torch.Tensor) -> dist.Distribution:
        loc, scale = self.transition(z_prev)
        return dist.Normal(loc, scale).to_event(1)

    def emission(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self.emitter(z), validate_args=False).to_event(1)

    def chain(self, mask: torch.Tensor) -> "GaussianChain":
        """p(z_{1:T}) for rows with ``mask`` ``(N, T)``: the transitions from ``z_init``."""
        return GaussianChain(lambda z_prev, t: self.transition(z_prev), self.z_init, mask)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.chain(mask))  # (..., N, T, Z)
            pyro.sample("x", StepEmission(self.emitter, z, mask, self.x_dim), obs=x)

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
