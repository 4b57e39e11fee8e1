"""The variational recurrent neural network (Chung, Kastner, Dinh, Goel, Courville, Bengio 2015).

A latent :math:`z_t` at every step whose prior depends on the recurrent state, and a state fed
by both the observation and the latent (Chung et al., eqs. 5-7):

.. math::
    z_t \\mid h_{t-1} &\\sim \\mathcal{N}(\\mu_{0}(h_{t-1}), \\operatorname{diag}\\sigma^2_{0}(h_{t-1})), \\\\
    x_t \\mid z_t, h_{t-1} &\\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid}
        g(\\varphi_z(z_t), h_{t-1})), \\\\
    h_t &= \\operatorname{GRU}([\\varphi_x(x_t), \\varphi_z(z_t)], h_{t-1}), \\qquad h_0 = 0,

so :math:`p(x_{1:T}, z_{1:T}) = \\prod_t p(z_t \\mid x_{<t}, z_{<t})\\, p(x_t \\mid z_{\\le t}, x_{<t})`.
The guide (guides/vrnn.py) is the paper's filtering posterior :math:`q(z_t \\mid x_t, h_{t-1})`
(eq. 9), with the state computed by the guide's own recurrence of the same form (its own
weights: a Pyro guide cannot read the model's state; Chung et al. share one :math:`h`).

The batch is ``{"x": (N, T, D), "mask": (N, T) bool}`` (e.g. the ``bach-chorales`` data set,
:mod:`pyrovae.data.sequences`); step ``t`` of both sites is masked with ``mask[:, t]``, so padding
after a sequence's end never enters the loss or the log-weights.
A 2-D ``x`` ``(N, D)`` is one step per row: with :math:`T = 1` the model is a VAE with the prior
:math:`\\mathcal{N}(\\mu_0(0), \\sigma_0^2(0))` and decoder :math:`g(\\varphi_z(z), 0)`.

**Two sites, the steps batched.** The latents are one site ``z`` ``(N, T, Z)``
(:class:`RecurrentNormal`, event ``(T, Z)``) and the observations one site ``x`` ``(N, T, D)``
(:class:`RecurrentEmission`). Given the guide's draws every input of the model's recurrence is
known, so the model runs :math:`\\varphi_x` and :math:`\\varphi_z` over all steps in one call each,
the GRU as one ``torch.gru`` call over the steps (the cell's weights), and the prior and decoder
over all steps at once, not ``T`` steps and ``2 T`` Pyro sites; the guide still draws step by
step (its state reads each draw). The loss and gradients are those of the former program of one
site per step at the same seed, to float rounding (tests/models/test_vrnn.py).

**The baseline without latents** (:class:`BernoulliRNN`) is the VRNN with :math:`z` removed: the
same :math:`\\varphi_x`, GRU and decoder sizes,

.. math::
    x_t \\mid x_{<t} \\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} g(h_{t-1})), \\qquad
    h_t = \\operatorname{GRU}(\\varphi_x(x_t), h_{t-1}), \\qquad h_0 = 0,

so its :math:`\\log p(x_{1:T}) = \\sum_t \\log p(x_t \\mid h_{t-1})` is exact
(:meth:`BernoulliRNN.log_prob`). Like :class:`~pyrovae.models.sentence.SentenceLM` it is not a
registered pair (it has no latent): train it with :func:`pyrovae.fit` and the guide
:func:`~pyrovae.models.sentence.no_latents`.

References

[1] Chung, Kastner, Dinh, Goel, Courville, Bengio. A Recurrent Latent Variable Model for
    Sequential Data. NeurIPS 2015. arXiv:1506.02216
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

from pyrovae.nn import MLP, activation as make_activation, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model, broadcast_cat
from pyrovae.registry import register_model

__all__ = ["VRNN", "BernoulliRNN", "Recurrence", "RecurrentEmission", "RecurrentNormal", "as_steps", "real_steps",
           "reverse_within_lengths"]


def as_steps(x: torch.Tensor, mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x, mask)`` as ``(N, T, D)`` and ``(N, T)`` bool: a 2-D ``x`` is one step per row; no
    mask means every step is real."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
        mask = None if mask is None else mask.reshape(x.shape[0], 1)
    if x.dim() != 3:
        raise ValueError(f"a VRNN takes x of shape (N, T, D) (or (N, D), one step), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be (N, T) = {tuple(x.shape[:2])}")
    return x, mask.bool()


def reverse_within_lengths(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (N, T, D) with each row's first ``mask[n].sum()`` steps reversed, padding left in place."""
    T = x.shape[1]
    lengths = mask.long().sum(1, keepdim=True)
    t = torch.arange(T, device=x.device).expand(x.shape[0], T)
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def real_steps(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The rows' real steps, padding left out: ``(number of real steps, D)``, for the
    sequence models' ``init_from_data`` (the output bias at the keys' frequencies).

    >>> real_steps(torch.ones(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]])).shape
    torch.Size([3, 4])
    """
    x, mask = as_steps(x, mask)
    return x[mask]


def example_sequences(x_dim: int, n: int = 16, num_steps: int = 5, seed: int = 0) -> dict:
    """A small fixed batch of binary sequences, the sequence models' ``example_batch``:
    ``{"x": (n, num_steps, x_dim), "mask", "lengths"}``, lengths from 2 to ``num_steps`` (row 0
    full), zeros on padding."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, num_steps + 1, (n,), generator=generator)
    lengths[0] = num_steps
    mask = torch.arange(num_steps) < lengths[:, None]
    x = torch.bernoulli(torch.full((n, num_steps, x_dim), 0.3), generator=generator) * mask[..., None]
    return {"x": x, "mask": mask, "lengths": lengths}


class Recurrence(nn.Module):
    """The feature extractors :math:`\\varphi_x`, :math:`\\varphi_z` and the GRU
    :math:`h_t = \\operatorname{GRU}([\\varphi_x(x_t), \\varphi_z(z_t)], h_{t-1})`, for any
    leading (particle, row) dimensions."""

    def __init__(self, x_dim, z_dim, rnn_dim, feature_dim, hidden_dims, activation):
        super().__init__()
        self.rnn_dim = rnn_dim
        self.phi_x = nn.Sequential(MLP(x_dim, hidden_dims, feature_dim, activation), make_activation(activation))
        self.phi_z = nn.Sequential(MLP(z_dim, hidden_dims, feature_dim, activation), make_activation(activation))
        self.cell = nn.GRUCell(2 * feature_dim, rnn_dim)

    def step(self, fx: torch.Tensor, fz: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The next state from the features of x_t and z_t; shapes broadcast (e.g. ``(K, N, F)``
        features against an ``(N, H)`` state)."""
        lead = torch.broadcast_shapes(fx.shape[:-1], fz.shape[:-1], h.shape[:-1])
        inputs = torch.cat([fx.expand(lead + fx.shape[-1:]), fz.expand(lead + fz.shape[-1:])], -1)
        h = h.expand(lead + h.shape[-1:])
        return self.cell(inputs.reshape(-1, inputs.shape[-1]), h.reshape(-1, h.shape[-1])).reshape(
            lead + (self.rnn_dim,))

    def previous_states(self, fx: torch.Tensor, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(fz, h_prev)`` for latents ``z`` ``(..., N, T, Z)`` given at every step, with ``fx``
        ``(N, T, F)`` (or with the leading dims): ``fz = phi_z(z)`` and ``h_prev[..., t, :]`` the state
        :math:`h_{t-1}` step ``t`` reads (:math:`h_{-1} = 0`). The inputs of every step are known,
        so the GRU runs as one ``torch.gru`` call over the steps (the cell's weights; the same
        recurrence as :meth:`step` at each step), in blocks of steps when the rows are many
        (:func:`step_blocks`)."""
        fz = self.phi_z(z)
        lead = torch.broadcast_shapes(fx.shape[:-2], fz.shape[:-2])
        T = fz.shape[-2]
        inputs = torch.cat([fx.expand(lead + fx.shape[-2:]), fz.expand(lead + fz.shape[-2:])], -1)
        inputs = inputs.reshape((-1,) + inputs.shape[-2:])  # (B, T, 2F)
        cell = self.cell
        params = [cell.weight_ih, cell.weight_hh] + ([cell.bias_ih, cell.bias_hh] if cell.bias else [])
        carry = inputs.new_zeros(inputs.shape[0], self.rnn_dim)
        parts = []
        for steps in step_blocks(inputs.unsqueeze(0)):
            run = min(steps.stop, T - 1) - steps.start  # steps fed to the GRU in this block
            seq = carry.unsqueeze(1)
            if run > 0:
                out, _ = torch.gru(inputs[:, steps.start:steps.start + run], carry.unsqueeze(0), params, cell.bias,
                                   1, 0.0, self.training, False, True)
                seq = torch.cat([seq, out], 1)
            parts.append(seq[:, :steps.stop - steps.start])
            carry = seq[:, -1]
        h_prev = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        return fz, h_prev.reshape(lead + (T, self.rnn_dim))


#: rows (leading dims x steps) per network call when every step is computed at once
ROWS_PER_CALL = 20_000


def step_blocks(z: torch.Tensor) -> list:
    """Slices that cut ``z`` ``(..., T, Z)`` along its steps into blocks of at most
    :data:`ROWS_PER_CALL` rows (one block when it fits): the networks' activations stay in cache
    (all steps of many particles at once ran slower than step by step)."""
    rows = max(1, z[..., 0, 0].numel())
    size, T = max(1, ROWS_PER_CALL // rows), z.shape[-2]
    return [slice(t, min(t + size, T)) for t in range(0, T, size)]


class RecurrentNormal(TorchDistribution):
    """Diagonal Gaussian latents driven by a recurrent state, over one row's ``T`` steps:
    :math:`\\prod_t \\mathcal{N}(z_t;\\, \\mu_t, \\operatorname{diag}\\sigma_t^2)^{m_t}` with
    :math:`(\\mu_t, \\sigma_t) = \\mathrm{head}(\\varphi_x(x_t), h_{t-1})`,
    :math:`h_t = \\mathrm{GRU}([\\varphi_x(x_t), \\varphi_z(z_t)], h_{t-1})`, :math:`h_{-1} = 0`:
    batch ``(N,)``, event ``(T, Z)``; a padded step (``m_t = 0``) is drawn (the recurrence runs
    on) but has no density. The VRNN's prior :math:`p(z_t \\mid h_{t-1})` (its ``head`` reads the
    state only) and its guide's filtering posterior are both one.

    The draws run the recurrence step by step (``rsample``: one standard normal ``(..., N, Z)``
    per step, in turn, as one site per step would draw them) and keep each step's location, scale
    and state; ``log_prob`` of that draw (or of a view of it) reads them back. Any other value
    (the guide's draws scored by the model) is scored with every step at once: the states by one
    GRU call over the steps (:meth:`Recurrence.previous_states`), the head over all steps.
    :meth:`states` gives ``(fz, h_prev)`` of a value (kept for the latest value asked, so the
    model's emission and this density share them).

    :param Recurrence recurrence: :math:`\\varphi_z` and the GRU.
    :param callable head: ``head(fx, h)`` gives ``(loc, scale)`` from features ``(..., F)`` and
        states ``(..., H)`` (any leading dims, broadcast).
    :param torch.Tensor fx: ``(N, T, F)``, :math:`\\varphi_x(x_t)` at every step.
    :param torch.Tensor mask: ``(N, T)`` bool.
    :param int z_dim: the latent's size per step.

    >>> rec = Recurrence(x_dim=3, z_dim=2, rnn_dim=4, feature_dim=5, hidden_dims=(), activation="relu")
    >>> head = lambda fx, h: (h[..., :2], torch.ones_like(h[..., :2]))
    >>> chain = RecurrentNormal(rec, head, torch.zeros(6, 7, 5), torch.ones(6, 7, dtype=torch.bool), 2)
    >>> z = chain.rsample()
    >>> z.shape, bool(torch.allclose(chain.log_prob(z), chain.log_prob(z.clone()), atol=1e-5))
    (torch.Size([6, 7, 2]), True)
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, recurrence: Recurrence, head, fx: torch.Tensor, mask: torch.Tensor, z_dim: int,
                 validate_args=None):
        self.recurrence, self.head, self.fx, self.mask_ = recurrence, head, fx, mask
        self._draw = None  # (value, loc, scale, the states h_{t-1} of each step) of the latest draw
        self._states = None  # (value, fz, h_prev) of the latest value asked for
        super().__init__(mask.shape[:-1], torch.Size((mask.shape[-1], z_dim)), validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape[-1:]  # (..., N, Z)
        h = self.fx.new_zeros(self.batch_shape + (self.recurrence.rnn_dim,))
        T = self.event_shape[0]
        # the steps' features taken apart once: indexing fx[..., t, :] at each step would cost, in
        # the backward pass, a zero-filled gradient of all of fx per step
        fx_steps = self.fx.unbind(-2)
        zs, locs, scales, hs = [], [], [], []
        for t in range(T):
            fx = fx_steps[t]
            loc, scale = self.head(fx, h)
            eps = torch.empty(torch.broadcast_shapes(shape, loc.shape, scale.shape), dtype=loc.dtype,
                              device=loc.device).normal_()
            z = loc + eps * scale
            zs.append(z), locs.append(loc.expand(z.shape)), scales.append(scale.expand(z.shape))
            hs.append(h.expand(z.shape[:-1] + h.shape[-1:]))
            if t + 1 < T:
                h = self.recurrence.step(fx, self.recurrence.phi_z(z), h)
        value = torch.stack(zs, -2)  # (..., N, T, Z)
        self._draw = (value, torch.stack(locs, -2), torch.stack(scales, -2), hs)  # the states stacked if asked
        return value

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @staticmethod
    def _same(value: torch.Tensor, other: Optional[torch.Tensor]) -> bool:
        return other is not None and (value is other or (
            value.data_ptr() == other.data_ptr() and value.shape == other.shape and value.stride() == other.stride()))

    def states(self, value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(fz, h_prev)`` of ``value`` ``(..., N, T, Z)``: :math:`\\varphi_z(z_t)` and the state
        :math:`h_{t-1}` at every step."""
        if self._states is not None and self._same(value, self._states[0]):
            return self._states[1:]
        if self._draw is not None and self._same(value, self._draw[0]):
            fz, h_prev = self.recurrence.phi_z(value), torch.stack(self._draw[3], -2)
        else:
            fz, h_prev = self.recurrence.previous_states(self.fx, value)
        self._states = (value, fz, h_prev)
        return fz, h_prev

    def step_params(self, value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each ``(..., N, T, Z)``: the Gaussian of every step :math:`z_t`
        given the steps before it in ``value`` (a per-step KL between two chains reads these)."""
        if self._draw is not None and self._same(value, self._draw[0]):
            return self._draw[1], self._draw[2]
        _, h_prev = self.states(value)
        parts = [self.head(self.fx[..., steps, :], h_prev[..., steps, :]) for steps in step_blocks(h_prev)]
        return tuple(torch.cat([p[i] for p in parts], -2) if len(parts) > 1 else parts[0][i] for i in (0, 1))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` ``(..., N, T, Z)`` gives ``(..., N)``."""
        loc, scale = self.step_params(value)
        log_p = dist.Normal(loc, scale).log_prob(value).sum(-1)  # (..., N, T)
        return torch.where(self.mask_, log_p, torch.zeros_like(log_p)).sum(-1)


class RecurrentEmission(TorchDistribution):
    """The VRNN's observations given its latents: :math:`\\prod_t p(x_t \\mid z_t, h_{t-1})^{m_t}`,
    each step Bernoulli keys with logits ``decoder([fz_t, h_{t-1}])``, for the states of ``z``
    read from the prior (:meth:`RecurrentNormal.states`): batch ``(..., N)``, event ``(T, D)``; the
    decoder runs over blocks of steps when the density is computed, and a padded step has none."""

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 2)

    def __init__(self, decoder, prior: RecurrentNormal, z: torch.Tensor, x_dim: int, validate_args=None):
        self.decoder, self.prior, self.z = decoder, prior, z
        batch_shape = torch.broadcast_shapes(z.shape[:-2], prior.mask_.shape[:-1])
        super().__init__(batch_shape, torch.Size((prior.mask_.shape[-1], x_dim)), validate_args=False)

    def _logits(self, steps=slice(None)) -> torch.Tensor:
        fz, h_prev = self.prior.states(self.z)
        return self.decoder(broadcast_cat(fz[..., steps, :], h_prev[..., steps, :]))

    @property
    def mean(self) -> torch.Tensor:
        """The keys' probabilities at every step, ``(..., N, T, D)``."""
        return torch.sigmoid(self._logits())

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.sigmoid(self._logits())
            return torch.bernoulli(probs.expand(torch.Size(sample_shape) + self.batch_shape + self.event_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` ``(..., N, T, D)`` gives ``(..., N)``."""
        _, h_prev = self.prior.states(self.z)
        log_p = []
        for steps in step_blocks(h_prev):
            logits, x = torch.broadcast_tensors(self._logits(steps), value[..., steps, :])
            log_p.append(-F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1))
        log_p = torch.cat(log_p, -1) if len(log_p) > 1 else log_p[0]  # (..., N, T)
        return torch.where(self.prior.mask_, log_p, torch.zeros_like(log_p)).sum(-1)


@register_model("vrnn")
class VRNN(Model):
    """The VRNN (Chung et al. 2015): per-step Gaussian latents with a prior from the recurrent
    state, Bernoulli observations (piano-roll keys), a GRU fed by x_t and z_t.

    :param int x_dim: size of one step (88 keys for ``bach-chorales``).
    :param int z_dim: latent size per step.
    :param int rnn_dim: size of the recurrent state h.
    :param int feature_dim: width of the features of x_t and z_t.
    :param tuple hidden_dims: hidden widths of every MLP (features, prior, decoder).
    :param str activation: nonlinearity.

    >>> model = VRNN(x_dim=5, z_dim=2, rnn_dim=8, feature_dim=4, hidden_dims=(8,))
    >>> model.generate(num_samples=3, num_steps=7).shape
    torch.Size([3, 7, 5])
    """

    guide_name = "vrnn"
    cannot_sample = 'a sequence model: draw sequences with model.generate(num_samples, num_steps)'
    #: the KL weight rises from 0 to 1 over the first 1000 steps (``--kl-warmup``): without it the
    #: latents collapse onto their prior (KL 0.007 nats per beat) and the VRNN is level with an RNN
    #: without latents; with it, on the chorales at batch 16, 100 epochs (``--kl-warmup 700``), it
    #: is 1.76 ± 0.07 / 1.74 ± 0.08 nats per beat better at seeds 0 / 1, paired
    #: (docs/sequences.md#vrnn-dmm-and-an-rnn-without-latents-compared-issue-13-item-4)
    default_objective_options = {"warmup_steps": 1000}

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 16
        rnn_dim: int = 128
        feature_dim: int = 64
        hidden_dims: Tuple[int, ...] = (64,)
        activation: str = "relu"

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, rnn_dim=self.rnn_dim, feature_dim=self.feature_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim, self.rnn_dim = o.x_dim, o.z_dim, o.rnn_dim
        self.recurrence = Recurrence(o.x_dim, o.z_dim, o.rnn_dim, o.feature_dim, o.hidden_dims, o.activation)
        self.prior_net = MLP(o.rnn_dim, o.hidden_dims, 2 * o.z_dim, o.activation)
        self.decoder = MLP(o.feature_dim + o.rnn_dim, o.hidden_dims, o.x_dim, o.activation)

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the emission's output bias at the logits of the training keys' frequencies
        over the real steps (``init="burda"``, the default of ``fit``; docs/sequences.md)."""
        bias_at_data_logits_(self.decoder[-1], real_steps(x, mask))

    def prior(self, h: torch.Tensor) -> dist.Distribution:
        """p(z_t | h_{t-1}): a diagonal Normal, batch shape ``h.shape[:-1]``."""
        return dist.Normal(*self.prior_params(h)).to_event(1)

    def emission(self, fz: torch.Tensor, h: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_t, h_{t-1}) from the features of z_t: independent Bernoulli keys."""
        return dist.Bernoulli(logits=self.decoder(broadcast_cat(fz, h)), validate_args=False).to_event(1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        """The model of the observed sequences ``x`` ``(N, T, D)`` with ``mask`` ``(N, T)``
        (``lengths``, a batch key of the sequence data sets, is accepted and unused: the mask
        carries it)."""
        x, mask = as_steps(x, mask)
        with pyro.plate("data", x.shape[0]):
            prior = self.chain(x, mask)
            z = pyro.sample("z", prior)  # (..., N, T, Z)
            pyro.sample("x", RecurrentEmission(self.decoder, prior, z, self.x_dim), obs=x)

    def prior_params(self, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of p(z_t | h_{t-1}) (any leading dims)."""
        loc, raw_scale = self.prior_net(h).split(self.z_dim, -1)
        return loc, F.softplus(raw_scale) + 1e-4

    def chain(self, x: torch.Tensor, mask: torch.Tensor) -> RecurrentNormal:
        """p(z_{1:T} | x) = prod_t p(z_t | h_{t-1}) for steps ``x`` ``(N, T, D)`` with ``mask``."""
        return RecurrentNormal(self.recurrence, lambda fx, h: self.prior_params(h), self.recurrence.phi_x(x),
                               mask, self.z_dim)

    def example_batch(self, n: int = 16, num_steps: int = 5, seed: int = 0) -> dict:
        """A small fixed batch of the shape the model takes: ``{"x": (n, num_steps, x_dim)``
        binary, ``"mask"``, ``"lengths"}``, lengths from 2 to ``num_steps`` (the contract tests')."""
        return example_sequences(self.x_dim, n, num_steps, seed)

    @torch.no_grad()
    def generate(self, num_samples: int, num_steps: int, mean: bool = False) -> torch.Tensor:
        """``(num_samples, num_steps, x_dim)`` sequences drawn from the model (ancestral
        sampling; ``mean``: key probabilities instead of a binary draw at each step, the draw
        still fed back)."""
        device = next(self.parameters()).device
        h = torch.zeros(num_samples, self.rnn_dim, device=device)
        steps = []
        for _ in range(num_steps):
            z = self.prior(h).sample()
            fz = self.recurrence.phi_z(z)
            px = self.emission(fz, h)
            x = px.sample()
            steps.append(px.mean if mean else x)
            h = self.recurrence.step(self.recurrence.phi_x(x), fz, h)
        return torch.stack(steps, 1)


class BernoulliRNN(Model):
    """The recurrent model without latents: :class:`VRNN` with z removed,
    :math:`p(x_t \\mid x_{<t}) = \\operatorname{Bernoulli}(\\operatorname{sigmoid} g(h_{t-1}))`,
    :math:`h_t = \\operatorname{GRU}(\\varphi_x(x_t), h_{t-1})`, :math:`h_0 = 0`.

    One observed site ``x``: Bernoulli keys ``(N, T, D)`` masked with the batch's ``mask`` (so
    padding after a sequence's end never counts), an event of ``(T, D)`` under the plate over
    rows. No latent site: train it with ``fit(rnn, no_latents, ...)``; :meth:`log_prob` is its
    exact log-likelihood per sequence. The options are :class:`VRNN`'s without ``z_dim``.

    >>> rnn = BernoulliRNN(x_dim=5, rnn_dim=8, feature_dim=4, hidden_dims=(8,))
    >>> rnn.log_prob(torch.zeros(3, 7, 5)).shape
    torch.Size([3])
    """

    @dataclass
    class Options:
        x_dim: int
        rnn_dim: int = 128
        feature_dim: int = 64
        hidden_dims: Tuple[int, ...] = (64,)
        activation: str = "relu"

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, rnn_dim=self.rnn_dim, feature_dim=self.feature_dim, hidden_dims=self.hidden_dims)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.rnn_dim = o.x_dim, o.rnn_dim
        self.phi_x = nn.Sequential(MLP(o.x_dim, o.hidden_dims, o.feature_dim, o.activation), make_activation(o.activation))
        self.rnn = nn.GRU(o.feature_dim, o.rnn_dim, batch_first=True)
        self.decoder = MLP(o.rnn_dim, o.hidden_dims, o.x_dim, o.activation)

    init_from_data = VRNN.init_from_data  # the same start as the VRNN's: keys' frequencies

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T, H)``: the state each step is predicted from, :math:`h_0 = 0, h_1, \\dots, h_{T-1}`
        (a step never sees itself or anything after it)."""
        h0 = x.new_zeros(x.shape[0], 1, self.rnn_dim)
        if x.shape[1] == 1:
            return h0
        h, _ = self.rnn(self.phi_x(x[:, :-1]))
        return torch.cat([h0, h], 1)

    def likelihood(self, x: torch.Tensor, mask: torch.Tensor) -> dist.Distribution:
        """p(x) as one distribution: batch ``(N,)``, event ``(T, D)``, the masked steps left out."""
        logits = self.decoder(self.states(x))
        return dist.Bernoulli(logits=logits, validate_args=False).mask(mask[..., None]).to_event(2)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        """The model of the observed sequences ``x`` ``(N, T, D)`` with ``mask`` ``(N, T)``
        (``lengths`` is accepted and unused: the mask carries it)."""
        x, mask = as_steps(x, mask)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.likelihood(x, mask), obs=x)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact :math:`\\log p(x_{1:T})` per sequence, ``(N,)``, in nats (the real steps only)."""
        x, mask = as_steps(x, mask)
        return self.likelihood(x, mask).log_prob(x)

    example_batch = VRNN.example_batch

    @torch.no_grad()
    def generate(self, num_samples: int, num_steps: int, mean: bool = False) -> torch.Tensor:
        """``(num_samples, num_steps, x_dim)`` sequences drawn from the model, step by step
        (``mean``: key probabilities instead of a draw at each step, the draw still fed back)."""
        device = next(self.parameters()).device
        h = torch.zeros(1, num_samples, self.rnn_dim, device=device)
        steps = []
        for _ in range(num_steps):
            px = dist.Bernoulli(logits=self.decoder(h[0]))
            x = px.sample()
            steps.append(px.mean if mean else x)
            _, h = self.rnn(self.phi_x(x).unsqueeze(1), h)
        return torch.stack(steps, 1)
