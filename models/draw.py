"""DRAW without attention (Gregor et al. 2015) and the learned prior of convolutional DRAW
("Towards conceptual compression", Gregor et al. 2016): latents drawn in T steps, each
writing an additive update onto a canvas.

The generative model (Gregor et al. 2015, eqs. 5-8 without the read/write attention):

.. math::
    h^{dec}_0 = 0,\\ c_0 = 0; \\qquad \\text{for } t = 1..T:\\quad
    z_t \\sim p(z_t \\mid h^{dec}_{t-1}), \\quad
    h^{dec}_t = \\operatorname{LSTM}^{dec}(z_t, h^{dec}_{t-1}), \\quad
    c_t = c_{t-1} + W h^{dec}_t + b; \\\\
    x \\mid c_T \\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid}(c_T)),

so the canvas is the sum of the T writes. ``prior="standard"`` is DRAW's
:math:`p(z_t) = \\mathcal{N}(0, I)`; ``prior="learned"`` is the conceptual-compression prior
:math:`p(z_t \\mid h^{dec}_{t-1}) = \\mathcal{N}(\\mu(h^{dec}_{t-1}), \\sigma^2(h^{dec}_{t-1}))`
(Gregor et al. 2016, sec. 2; here with fully connected LSTMs, not convolutional ones).

The guide (guides/draw.py) is DRAW's encoder: an LSTM that reads
:math:`[x, x - \\operatorname{sigmoid}(c_{t-1}), h^{dec}_{t-1}]`, the error left by the
canvas so far and the decoder's state, and gives :math:`q(z_t \\mid x, z_{<t})`. The decoder's
state is a deterministic function of :math:`z_{<t}` and the model's weights, so the guide
recomputes it with the model's own decoder (:meth:`DRAW.decode_step`): the guide holds an
unregistered reference to the model (``guide.bind_model(model)``; ``pyrovae fit`` and
``load_run`` bind it through :func:`pyrovae.registry.pair_guide`), so the decoder's
parameters belong to the model alone and are saved once. The per-step KL,
:math:`\\mathrm{KL}(q(z_t \\mid \\cdot) \\,\\|\\, p(z_t \\mid h^{dec}_{t-1}))`, is the number of
nats (bits, divided by ln 2) step t spends: ``DRAWGuide.kl_per_step``; reconstructions from
the first k steps, the rest drawn from the prior: ``DRAWGuide.reconstruct``.

The sites are ``z_1 .. z_T`` (a ``pyro.markov`` loop inside the plate over the batch) and the
observed ``x``.

References

[1] Gregor, Danihelka, Graves, Rezende, Wierstra. DRAW: A Recurrent Neural Network For Image
    Generation. ICML 2015. arXiv:1502.04623
[2] Gregor, Besse, Rezende, Danihelka, Wierstra. Towards Conceptual Compression. NeurIPS 2016.
    arXiv:1604.08772
"""

from __future__ import annotations

import typing
import weakref
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.nn import bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["DRAW", "lstm_step"]

Prior = Literal["standard", "learned"]
PRIORS = typing.get_args(Prior)
#: a model's shared decoder steps (DRAW.share_decoding), outside the instance: copies and
#: pickles of a model never carry them
_DECODED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
State = Tuple[torch.Tensor, torch.Tensor]


def lstm_step(cell: nn.LSTMCell, inputs: torch.Tensor, state: State) -> State:
    """One step of ``cell`` for any leading (particle, row) dimensions: ``inputs`` ``(..., I)``
    and the state ``(h, c)`` ``(..., H)`` broadcast against each other."""
    h, c = state
    lead = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1], c.shape[:-1])
    flat = lambda t: t.expand(lead + t.shape[-1:]).reshape(-1, t.shape[-1])  # noqa: E731
    h, c = cell(flat(inputs), (flat(h), flat(c)))
    return h.reshape(lead + h.shape[-1:]), c.reshape(lead + c.shape[-1:])


def diag_normal(params: torch.Tensor, z_dim: int) -> dist.Distribution:
    loc, raw_scale = params.split(z_dim, -1)
    return dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1)


@register_model("draw")
class DRAW(Model):
    """DRAW without attention: T latent steps write onto a canvas; x ~ Bernoulli(sigmoid(c_T)).

    :param int x_dim: size of one (flattened) image.
    :param int z_dim: latent size per step.
    :param int num_steps: T, the number of steps (sites ``z_1 .. z_T``).
    :param int rnn_dim: size of the decoder LSTM (and of the guide's encoder LSTM).
    :param str prior: ``"standard"`` (DRAW, N(0, I) per step) or ``"learned"``
        (p(z_t | h_dec_{t-1}), Gregor et al. 2016).

    >>> model = DRAW(x_dim=6, z_dim=2, num_steps=3, rnn_dim=8)
    >>> model(num_samples=4).shape
    torch.Size([4, 6])
    """

    guide_name = "draw"
    #: Adam's default step: 3e-3 reaches a better test ELBO than 1e-3 at 5 and 10 epochs
    #: (docs/draw.md#against-a-reference-implementation-at-equal-budget)
    default_lr = 3e-3

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 10
        num_steps: int = 10
        rnn_dim: int = 256
        prior: Prior = "standard"

        def __post_init__(self):
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, num_steps=self.num_steps, rnn_dim=self.rnn_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim, self.num_steps, self.rnn_dim = o.x_dim, o.z_dim, o.num_steps, o.rnn_dim
        self.decoder = nn.LSTMCell(o.z_dim, o.rnn_dim)
        self.write = nn.Linear(o.rnn_dim, o.x_dim)
        self.prior_net = nn.Linear(o.rnn_dim, 2 * o.z_dim) if o.prior == "learned" else None

    def share_decoding(self) -> None:
        """Keep the decoder steps computed from now until the end of the next :meth:`forward`,
        keyed by their inputs' identity: the guide calls this before it runs the decoder,
        and the model, replaying the guide's very tensors ``z_t`` from the same initial
        state, takes each step's outputs instead of computing them again (a pure function
        of the same tensors: the same values, and the gradients of the shared steps add up
        as the two copies' did)."""
        _DECODED[self] = {}

    def _shared(self, inputs: tuple, compute, extra=()):
        memo = _DECODED.get(self)
        if memo is None:
            return compute()
        key = tuple(id(t) for t in inputs) + tuple(extra) + (torch.is_grad_enabled(),)
        hit = memo.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], inputs)):
            return hit[1]
        out = compute()
        memo[key] = (inputs, out)  # holds the inputs, so that no id is reused while the entry lives
        return out

    def initial_state(self, n: int, like: torch.Tensor) -> Tuple[State, torch.Tensor]:
        """The decoder state ``(h_0, c_0) = 0`` ``(n, rnn_dim)`` and the empty canvas ``(n, x_dim)``."""
        def compute():
            zeros = like.new_zeros(n, self.rnn_dim)
            return (zeros, zeros), like.new_zeros(n, self.x_dim)

        return self._shared((like,), compute, extra=(n,))

    def prior(self, h: torch.Tensor) -> dist.Distribution:
        """p(z_t | h_dec_{t-1}): N(0, I) (standard) or the learned diagonal Normal, batch shape
        ``h.shape[:-1]``."""
        if self.prior_net is None:
            return dist.Normal(h.new_zeros(h.shape[:-1] + (self.z_dim,)), 1.0).to_event(1)
        return diag_normal(self.prior_net(h), self.z_dim)

    def decode_step(self, z: torch.Tensor, state: State, canvas: torch.Tensor) -> Tuple[State, torch.Tensor, torch.Tensor]:
        """``h_dec_t = LSTM(z_t, h_dec_{t-1})``, the write ``W h_dec_t + b`` and the canvas
        ``c_t = c_{t-1} + write``: returns ``(state, canvas, write)``, leading shapes broadcast."""
        def compute():
            new = lstm_step(self.decoder, z, state)
            write = self.write(new[0])
            return new, canvas + write, write

        return self._shared((z, state[0], state[1], canvas), compute)

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the canvas at the logits of the data's mean pixel (``init="burda"``, the
        default): the write's bias is a T-th of them, so that the T writes of an untrained
        decoder (weights small) add up to the mean image, and each step's error
        ``x - sigmoid(c_{t-1})`` is measured against a growing part of it."""
        bias_at_data_logits_(self.write, x)
        with torch.no_grad():
            self.write.bias.div_(self.num_steps)

    def likelihood(self, canvas: torch.Tensor) -> dist.Distribution:
        """p(x | c_T) = Bernoulli(sigmoid(c_T)), event shape ``(x_dim,)``."""
        return dist.Bernoulli(logits=canvas, validate_args=False).to_event(1)

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model of the images ``x`` ``(N, x_dim)``; with ``x=None``, ``num_samples``
        fresh images are drawn (returned)."""
        n = self.batch_size(x, num_samples)
        if x is None:
            like = next(self.parameters())
        else:
            if x.dim() != 2 or x.shape[-1] != self.x_dim:
                raise ValueError(f"DRAW takes flat images x of shape (N, {self.x_dim}), got {tuple(x.shape)}")
            like = x
        try:
            state, canvas = self.initial_state(n, like)
            with pyro.plate("data", n):
                for t in pyro.markov(range(1, self.num_steps + 1)):
                    z = pyro.sample(f"z_{t}", self.prior(state[0]))  # (..., N, z_dim)
                    state, canvas, _ = self.decode_step(z, state, canvas)
                return pyro.sample("x", self.likelihood(canvas), obs=x)
        finally:
            _DECODED.pop(self, None)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """``(num_samples, x_dim)`` images from the model: ``sigmoid(c_T)`` (``mean``) or a
        binary draw, z_t drawn from the prior."""
        like = next(self.parameters())
        state, canvas = self.initial_state(num_samples, like)
        for _ in range(self.num_steps):
            state, canvas, _ = self.decode_step(self.prior(state[0]).sample(), state, canvas)
        px = self.likelihood(canvas)
        return px.mean if mean else px.sample()
