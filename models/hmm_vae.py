"""The hidden Markov model variational autoencoder (Ebbers et al. 2017), for acoustic unit discovery.

A discrete first-order Markov chain of units, each emitting a Gaussian latent per frame, each
latent decoded to its frame:

.. math::
    s_1 &\\sim \\operatorname{Cat}(\\pi), \\qquad s_t \\mid s_{t-1} \\sim \\operatorname{Cat}(A_{s_{t-1}}),
        \\qquad s_t \\in \\{1..K\\}, \\\\
    z_t \\mid s_t &\\sim \\mathcal{N}(\\mu_{s_t}, \\operatorname{diag}\\sigma^2_{s_t}), \\\\
    x_t \\mid z_t &\\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} f_\\theta(z_t)),

with learned ``pi`` (``K``), ``A`` (``K x K``, rows softmax-normalized), per-unit means and scales,
and an MLP decoder ``f_theta``. The guide (guides/hmm_vae.py) is frame-wise and amortized,
:math:`q(z_{1:T} \\mid x_{1:T}) = \\prod_t q(z_t \\mid x_t)`, as Ebbers et al.'s encoder; the unit
chain is never sampled: it is summed out exactly, and the bound is

.. math:: \\log p(x_{1:T}) \\ge \\mathbb{E}_{q}\\Big[\\log \\sum_{s_{1:T}} p(s_{1:T})
          \\prod_t p(z_t \\mid s_t) + \\sum_t \\log p(x_t \\mid z_t) - \\log q(z_t \\mid x_t)\\Big].

**One site per kind, the units summed out in the prior.** The model has three sites: the latents
``z`` ``(N, T, Z)`` (event ``(T, Z)``), whose density is :class:`UnitChain`, the chain summed out by
the forward recursion :math:`\\alpha_t(s) = \\log p(z_t \\mid s) + \\log\\sum_{s'}
e^{\\alpha_{t-1}(s')} A_{s's}`, :math:`\\log p(z_{1:T}) = \\log\\sum_s e^{\\alpha_T(s)}`; the frames
``x`` ``(N, T, D)`` from one decoder call over every frame; nothing else. So any objective is exact
with no enumeration (the pair's default is ``elbo``; ``iwae`` and the importance-sampled
log-likelihood of ``pyrovae evaluate`` work as for any pair), ``beta`` weights log p(z) as it
would the enumerated sites, and a training step is a few tensor operations, not ``3 T`` Pyro
sites and Pyro's variable elimination (docs/performance.md). Within :meth:`HMMVAE.unit_sites` the
model also has the units as sites ``s_t`` (a ``pyro.markov`` loop marked
``infer={"enumerate": "parallel"}``, each ``z_t``'s density a factor given ``s_t``), for Pyro's
``infer_discrete`` and for ``TraceEnum_ELBO``, whose variable elimination is then the same forward
algorithm; there ``z`` must be given (conditioned, or a guide's). tests/models/test_hmm_vae.py
checks both sums against the explicit sum over all :math:`K^T` unit paths, and the loss and
gradients against the former program of ``3 T`` sites summed out by ``TraceEnum_ELBO``.

**Padding.** Batches ``{"x": (N, T, D), "mask": (N, T)}``; ``z_t`` and ``x_t`` are masked with
``mask[:, t]``; the units ``s_t`` are not: at a padded step the chain runs on with nothing
emitted, and summing out a unit that emits nothing gives 1 (each row of ``A`` sums to 1), so
padding adds exactly 0 to the bound (a hole inside a sequence is a missing frame).

**Unit discovery.** :meth:`HMMVAE.viterbi` is the most probable unit path given latents ``z``
(the guide's means, :meth:`HMMVAE.units`), over each row's real frames; docs/sequences.md has the
normalized mutual information with the true units of ``digit-sequences``.

References

[1] Ebbers, Heymann, Drude, Glarner, Haeb-Umbach, Raj. Hidden Markov Model Variational
    Autoencoder for Acoustic Unit Discovery. Interspeech 2017.
[2] Obermeyer et al. Tensor Variable Elimination for Plated Factor Graphs. ICML 2019 (Pyro's
    enumeration)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from pyrovae.models.vrnn import as_steps, example_sequences, real_steps
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["HMMVAE", "UnitChain", "unit_chain_log_prob"]


@register_model("hmm-vae")
class HMMVAE(Model):
    """A Markov chain of K units, a Gaussian latent per frame from its unit, an MLP decoder.

    :param int x_dim: size of one frame (Bernoulli pixels).
    :param int num_units: the number of units K.
    :param int z_dim: dimension of each frame's latent.
    :param tuple hidden_dims: hidden widths of the decoder ``z_t -> x_t``.
    :param str activation: the decoder's nonlinearity.
    :param float unit_spread: the standard deviation of the units' initial means (their scales start
        at softplus(0) = 0.69, the transitions at 1/2 to stay and 1/(2(K-1)) to each other unit).

    >>> model = HMMVAE(x_dim=5, num_units=3, z_dim=2, hidden_dims=(8,))
    >>> model.generate(num_samples=4, num_steps=6)[0].shape
    torch.Size([4, 6, 5])
    """

    guide_name = "hmm-vae"
    cannot_sample = 'a sequence model: draw sequences with model.generate(num_samples, num_steps)'

    @dataclass
    class Options:
        x_dim: int
        num_units: int = 10
        z_dim: int = 8
        hidden_dims: Tuple[int, ...] = (128,)
        activation: str = "tanh"
        unit_spread: float = 0.5

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, num_units=self.num_units, z_dim=self.z_dim,
                           hidden_dims=self.hidden_dims)
            if not self.unit_spread >= 0:
                raise ValueError(f"unit_spread (the scale of the units' initial means) must be >= 0, "
                                 f"got {self.unit_spread}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.num_units, self.z_dim = o.x_dim, o.num_units, o.z_dim
        self.decoder = MLP(o.z_dim, o.hidden_dims, o.x_dim, o.activation)
        self.init_logits = nn.Parameter(torch.zeros(o.num_units))
        # a chain that starts sticky (each unit stays with probability ~0.5): frames come in runs
        stay = torch.log(torch.tensor(float(max(o.num_units - 1, 1))))
        self.trans_logits = nn.Parameter(torch.eye(o.num_units) * stay)
        # the units' means start near the origin, a little apart: far apart, the frames' latents all
        # start nearest one unit, which then takes every frame (docs/sequences.md)
        self.unit_loc = nn.Parameter(o.unit_spread * torch.randn(o.num_units, o.z_dim))
        self.unit_scale_raw = nn.Parameter(torch.zeros(o.num_units, o.z_dim))
        self._unit_sites = False

    @contextlib.contextmanager
    def unit_sites(self):
        """Within this context the model also has its units as sites ``s_t`` (marked for
        enumeration; drawn from the chain where nothing enumerates them), each ``z_t``'s density a
        factor given ``s_t``: for ``infer_discrete``, whose last run replays the units it chose,
        and ``TraceEnum_ELBO``. ``z`` must be given there (conditioned, or replayed from a guide):
        a ``z`` drawn from the model is not drawn from these units."""
        before, self._unit_sites = self._unit_sites, True
        try:
            yield self
        finally:
            self._unit_sites = before

    # ------------------------------------------------------------ the pieces

    def log_init(self) -> torch.Tensor:
        """log pi, ``(K,)``."""
        return F.log_softmax(self.init_logits, -1)

    def log_transition(self) -> torch.Tensor:
        """log A, ``(K, K)``: row ``i`` is log p(s_t | s_{t-1} = i)."""
        return F.log_softmax(self.trans_logits, -1)

    def unit_scale(self) -> torch.Tensor:
        return F.softplus(self.unit_scale_raw) + 1e-3

    def unit_prior(self, s: torch.Tensor) -> dist.Distribution:
        """p(z_t | s_t) for integer units ``s`` (any shape, e.g. the enumerated ``(K, 1)``)."""
        return dist.Normal(self.unit_loc[s], self.unit_scale()[s]).to_event(1)

    def unit_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z | s) for every unit: ``z`` ``(..., Z)`` gives ``(..., K)``."""
        return unit_log_prob(self.unit_loc, self.unit_scale(), z)

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the decoder's output bias at the logits of the real frames' mean pixel
        (``init="burda"``, the default of ``fit``; docs/sequences.md)."""
        bias_at_data_logits_(self.decoder[-1], real_steps(x, mask))

    def emission(self, z: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_t): Bernoulli, event ``(x_dim,)``."""
        return dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1)

    def forward_algorithm(self, log_emit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log sum over unit paths of p(s_{1:T}) prod_t p(z_t | s_t)^{mask_t}: ``log_emit``
        ``(..., N, T, K)`` (log p(z_t | s) per unit), ``mask`` ``(N, T)``; returns ``(..., N)``."""
        return unit_chain_log_prob(self.log_init(), self.log_transition(), log_emit, mask)

    def chain(self, mask: torch.Tensor) -> "UnitChain":
        """p(z_{1:T}), the units summed out, for rows with ``mask`` ``(N, T)``."""
        return UnitChain(self.log_init(), self.log_transition(), self.unit_loc, self.unit_scale(), mask)

    # ------------------------------------------------------------ the model

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        N, T = x.shape[:2]
        with pyro.plate("data", N):
            if not self._unit_sites:
                # the units summed out by the forward algorithm inside the prior's density
                z = pyro.sample("z", self.chain(mask))  # (..., N, T, Z)
            else:
                # the units as sites, enumerated or drawn from the chain; z's density is theirs
                z = pyro.sample("z", self.chain(mask).mask(False))
                s = None
                for t in pyro.markov(range(T)):
                    logits = self.log_init() if s is None else self.log_transition()[s]
                    s = pyro.sample(f"s_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
                    with poutine.mask(mask=mask[:, t]):
                        pyro.factor(f"z_{t}_given_s_{t}", self.unit_prior(s).log_prob(z[..., t, :]))
            emission = dist.Bernoulli(logits=self.decoder(z), validate_args=False)  # batch (..., N, T, D)
            pyro.sample("x", emission.mask(mask.unsqueeze(-1)).to_event(2), obs=x)

    # ------------------------------------------------------------ units

    @torch.no_grad()
    def viterbi(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The most probable unit path ``argmax_s p(s_{1:L}, z_{1:L})`` over each row's real frames
        (``L`` its length): ``z`` ``(N, T, Z)`` gives int64 ``(N, T)``, -1 on padding. Padding must
        be at the end of a row."""
        z, mask = as_steps(z, mask)
        log_emit = self.unit_log_prob(z)  # (N, T, K)
        log_A = self.log_transition()
        K, T = self.num_units, z.shape[1]
        stay = torch.full((K, K), float("-inf"), device=z.device).fill_diagonal_(0.0)  # past a row's end
        delta = self.log_init() + log_emit[:, 0]
        back = []
        for t in range(1, T):
            step = torch.where(mask[:, t, None, None], log_A, stay)  # (N, K, K)
            scores = delta.unsqueeze(-1) + step
            best, arg = scores.max(-2)
            back.append(arg)
            delta = best + torch.where(mask[:, t, None], log_emit[:, t], torch.zeros_like(best))
        path = [delta.argmax(-1)]
        for arg in reversed(back):
            path.append(arg.gather(-1, path[-1].unsqueeze(-1)).squeeze(-1))
        units = torch.stack(path[::-1], 1)
        return torch.where(mask, units, torch.full_like(units, -1))

    @torch.no_grad()
    def units(self, guide, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The discovered units of frames ``x`` ``(N, T, D)``: the Viterbi path given the guide's
        means of ``z_t`` (int64 ``(N, T)``, -1 on padding)."""
        x, mask = as_steps(x, mask)
        return self.viterbi(guide.mean(x), mask)

    # ------------------------------------------------------------ data and samples

    def example_batch(self, n: int = 16, num_steps: int = 5, seed: int = 0) -> dict:
        """Binary sequences of lengths 2..num_steps (row 0 full), for the contract tests."""
        return example_sequences(self.x_dim, n, num_steps, seed)

    @torch.no_grad()
    def generate(self, num_samples: int, num_steps: int, mean: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sequences from the model: frames ``(num_samples, num_steps, x_dim)`` (the decoder's
        means with ``mean=True``) and their units ``(num_samples, num_steps)``."""
        s = dist.Categorical(logits=self.log_init()).sample((num_samples,))
        frames, units = [], []
        for t in range(num_steps):
            if t:
                s = dist.Categorical(logits=self.log_transition()[s]).sample()
            px = self.emission(self.unit_prior(s).sample())
            frames.append(px.mean if mean else px.sample())
            units.append(s)
        return torch.stack(frames, 1), torch.stack(units, 1)


def unit_log_prob(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log N(z; loc_s, diag scale_s^2) for every unit ``s``: ``loc``, ``scale`` ``(K, Z)``, ``z``
    ``(..., Z)`` gives ``(..., K)``."""
    return dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))


def unit_chain_log_prob(log_init: torch.Tensor, log_A: torch.Tensor, log_emit: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """The forward algorithm: ``log sum_s p(s_1) prod_t A[s_{t-1}, s_t] prod_t e_t(s_t)^{mask_t}``
    for ``log_emit`` ``(..., N, T, K)`` (log e_t(s)), ``mask`` ``(N, T)``; returns ``(..., N)``."""
    log_emit = torch.where(mask[..., None], log_emit, torch.zeros_like(log_emit))
    alpha = log_init + log_emit[..., 0, :]
    for t in range(1, log_emit.shape[-2]):
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + log_A, -2) + log_emit[..., t, :]
    return torch.logsumexp(alpha, -1)


class UnitChain(TorchDistribution):
    """The HMM-VAE's prior over one row's latents, the units summed out:
    :math:`p(z_{1:T}) = \\sum_{s_{1:T}} \\pi_{s_1} \\prod_{t>1} A_{s_{t-1} s_t}
    \\prod_t \\mathcal{N}(z_t; \\mu_{s_t}, \\sigma^2_{s_t})^{m_t}`, batch ``(N,)``, event ``(T, Z)``;
    a padded step (``m_t = 0``) emits nothing, and its ``z_t`` is drawn but has no density.

    :param log_init: log pi ``(K,)``; :param log_A: log A ``(K, K)``; :param loc, scale: the
        units' Gaussians ``(K, Z)``; :param mask: ``(N, T)`` bool.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = False

    def __init__(self, log_init, log_A, loc, scale, mask, validate_args=None):
        self.log_init, self.log_A, self.loc, self.scale, self.mask_ = log_init, log_A, loc, scale, mask
        super().__init__(mask.shape[:-1], torch.Size((mask.shape[-1], loc.shape[-1])), validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(..., N, T, Z)`` gives ``(..., N)``."""
        return unit_chain_log_prob(self.log_init, self.log_A, unit_log_prob(self.loc, self.scale, z), self.mask_)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral draws: each row its own unit path, then ``z_t`` from its unit."""
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            s = [dist.Categorical(logits=self.log_init).sample(shape)]
            for _ in range(1, self.event_shape[0]):
                s.append(dist.Categorical(logits=self.log_A[s[-1]]).sample())
            s = torch.stack(s, -1)  # (..., N, T)
            return dist.Normal(self.loc[s], self.scale[s]).sample()
