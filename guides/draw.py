"""DRAW's encoder (Gregor et al. 2015, eqs. 3-4 without attention): q(z_t | x, z_{<t}).

.. math::
    \\hat x_t = x - \\operatorname{sigmoid}(c_{t-1}), \\quad
    h^{enc}_t = \\operatorname{LSTM}^{enc}([x, \\hat x_t, h^{dec}_{t-1}], h^{enc}_{t-1}), \\quad
    q(z_t \\mid x, z_{<t}) = \\mathcal{N}(\\mu(h^{enc}_t), \\operatorname{diag}\\sigma^2(h^{enc}_t)),

with the canvas :math:`c_{t-1}` and the decoder state :math:`h^{dec}_{t-1}` those of the
model (models/draw.py) after the draws :math:`z_{<t}`: the guide runs the model's decoder
(:meth:`~pyrovae.models.draw.DRAW.decode_step`) through a reference it does not register
(``bind_model``), so the decoder's weights are the model's, trained by both terms of the
ELBO, and saved once, with the model. ``pyrovae fit`` and ``load_run`` bind it
(:func:`pyrovae.registry.pair_guide`); in Python, call ``guide.bind_model(model)`` before ``fit``.

Conceptual compression (Gregor et al. 2016): :meth:`DRAWGuide.kl_per_step` is the KL of each
step, in bits, along draws from q (its sum over steps is the KL term of the ELBO);
:meth:`DRAWGuide.reconstruct` decodes the first k steps' posterior means and fills the rest
from the prior.

References

[1] Gregor, Danihelka, Graves, Rezende, Wierstra. DRAW: A Recurrent Neural Network For Image
    Generation. ICML 2015. arXiv:1502.04623
[2] Gregor, Besse, Rezende, Danihelka, Wierstra. Towards Conceptual Compression. NeurIPS 2016.
    arXiv:1604.08772
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.models.draw import DRAW, diag_normal
from pyrovae.nn import check_positive
from pyrovae.guides.base import Guide
from pyrovae.registry import register_guide

__all__ = ["DRAWGuide", "FixedInputLSTMCell"]

LN2 = math.log(2.0)


class FixedInputLSTMCell(nn.LSTMCell):
    """An ``nn.LSTMCell`` (the same parameters) whose input's first ``fixed_dim`` entries stay
    the same from step to step (DRAW's image): their product with the input weights, plus
    both biases, is computed once (:meth:`read_fixed`), and each step adds the product of the
    rest of the input, any leading dimensions broadcast:

    .. math:: g = W_{fixed}\\, u + b_{ih} + b_{hh} + W_{rest}\\, v + W_{hh} h, \\quad
        c' = \\sigma(g_f) c + \\sigma(g_i) \\tanh(g_g), \\quad h' = \\sigma(g_o) \\tanh(c').
    """

    def __init__(self, input_size: int, hidden_size: int, fixed_dim: int):
        super().__init__(input_size, hidden_size)
        self.fixed_dim = fixed_dim

    def read_fixed(self, fixed: torch.Tensor) -> tuple:
        """``(W_fixed u + b_ih + b_hh, W_rest)``: the fixed input's share of the gates
        ``(..., 4 hidden_size)`` and the weights of the rest (one slice for all steps, so that
        the backward pass assembles the weights' gradient once)."""
        d = self.fixed_dim
        return F.linear(fixed, self.weight_ih[:, :d], self.bias_ih + self.bias_hh), self.weight_ih[:, d:]

    def forward(self, input: torch.Tensor, hx=None, fixed: Optional[tuple] = None):
        """Without ``fixed``, ``nn.LSTMCell``'s step on the whole ``input``. With ``fixed``
        (:meth:`read_fixed`), ``input`` is the rest of the input, ``hx = (h, c)``; returns the
        next ``(h, c)``."""
        if fixed is None:
            return super().forward(input, hx)
        fixed_gates, w_rest = fixed
        h, c = hx
        gates = fixed_gates + F.linear(input, w_rest) + F.linear(h, self.weight_hh)  # input, forget, cell, output
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@register_guide("draw")
class DRAWGuide(Guide):
    """DRAW's recurrent encoder, reading the image, the canvas's error and the decoder's state.

    :param int x_dim: size of one (flattened) image.
    :param int z_dim: latent size per step (the model's).
    :param int num_steps: T (the model's).
    :param int rnn_dim: size of the encoder LSTM; the model's decoder has the same size.
    :param str site: the prefix of the per-step sites ``z_1 .. z_T``.

    >>> model, guide = DRAW(x_dim=6, z_dim=2, num_steps=3, rnn_dim=8), DRAWGuide(x_dim=6, z_dim=2, num_steps=3, rnn_dim=8)
    >>> guide.bind_model(model)
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(5, 6))
    >>> trace.nodes["z_3"]["value"].shape, guide.kl_per_step(torch.zeros(5, 6)).shape
    (torch.Size([5, 2]), torch.Size([5, 3]))
    """

    model_name = "draw"

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 10
        num_steps: int = 10
        rnn_dim: int = 256
        site: str = "z"

        def __post_init__(self):
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, num_steps=self.num_steps, rnn_dim=self.rnn_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim, self.num_steps, self.site = o.x_dim, o.z_dim, o.num_steps, o.site
        self.encoder = FixedInputLSTMCell(2 * o.x_dim + o.rnn_dim, o.rnn_dim, fixed_dim=o.x_dim)
        self.posterior_net = nn.Linear(o.rnn_dim, 2 * o.z_dim)
        self._bound = ()  # (model,): a plain tuple, so the model's modules are not registered here

    # ------------------------------------------------------------ the model's decoder

    def bind_model(self, model: DRAW) -> None:
        """Use ``model``'s decoder (its state and canvas) at every step; its parameters stay
        the model's (not registered in this guide, not in its state dict)."""
        if not isinstance(model, DRAW):
            raise TypeError(f"the draw guide reads the state of a DRAW model's decoder; got a {type(model).__name__} "
                            "(use --model draw)")
        mine, theirs = self.options, model.options
        for name in ("x_dim", "z_dim", "num_steps", "rnn_dim"):
            if getattr(mine, name) != getattr(theirs, name):
                raise ValueError(f"the draw guide's {name} is {getattr(mine, name)} but the model's is "
                                 f"{getattr(theirs, name)}; build both with the same {name}")
        self._bound = (model,)

    @property
    def model(self) -> DRAW:
        if not self._bound:
            raise RuntimeError("the draw guide is not bound to its DRAW model: call guide.bind_model(model) first "
                               "(pyrovae fit and load_run do it)")
        return self._bound[0]

    # ------------------------------------------------------------ one pass over the steps

    def posterior(self, h_enc: torch.Tensor) -> dist.Distribution:
        """q(z_t | h_enc_t): a diagonal Normal."""
        return diag_normal(self.posterior_net(h_enc), self.z_dim)

    def read_image(self, x: torch.Tensor) -> tuple:
        """The image's share of the encoder's gates, ``W_x x + b`` ``(..., N, 4 rnn_dim)``, and
        the encoder's other input weights (:meth:`FixedInputLSTMCell.read_fixed`): computed
        once per image, not once per step and particle."""
        return self.encoder.read_fixed(x)

    def encode_step(self, x, canvas, h_dec, enc_state, image=None):
        """The encoder's next state from ``[x, x - sigmoid(c_{t-1}), h_dec_{t-1}]`` (broadcast),
        the image's share ``image`` (:meth:`read_image`) computed once."""
        if image is None:
            image = self.read_image(x)
        error = x - torch.sigmoid(canvas)
        lead = torch.broadcast_shapes(error.shape[:-1], h_dec.shape[:-1])
        rest = torch.cat([error.expand(lead + error.shape[-1:]), h_dec.expand(lead + h_dec.shape[-1:])], -1)
        return self.encoder(rest, enc_state, fixed=image)

    def forward(self, x: torch.Tensor, **kwargs):
        model = self.model
        n = x.shape[0]
        model.share_decoding()  # the model's replay takes these decoder steps (DRAW.share_decoding)
        dec_state, canvas = model.initial_state(n, x)
        enc_state, image = dec_state, self.read_image(x)
        with pyro.plate("data", n):
            for t in pyro.markov(range(1, self.num_steps + 1)):
                enc_state = self.encode_step(x, canvas, dec_state[0], enc_state, image)
                z = pyro.sample(f"{self.site}_{t}", self.posterior(enc_state[0]))  # (..., N, z_dim)
                dec_state, canvas, _ = model.decode_step(z, dec_state, canvas)

    def trajectory(self, x: torch.Tensor, k: Optional[int] = None, posterior: str = "sample",
                   rest: str = "mean") -> dict:
        """Run the T steps on ``x`` ``(..., N, x_dim)`` outside Pyro: steps 1..k take z_t from
        q (``posterior``: "sample" or "mean"), steps k+1..T from the prior (``rest``: "sample"
        or "mean"). Returns lists over steps: ``z``, ``q`` (None after step k), ``p``,
        ``writes``, and the final ``canvas``."""
        model = self.model
        k = self.num_steps if k is None else k
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"k must be in 0..{self.num_steps} (the number of steps), got {k}")
        for name, how in (("posterior", posterior), ("rest", rest)):
            if how not in ("sample", "mean"):
                raise ValueError(f"{name} must be 'sample' or 'mean', got {how!r}")
        dec_state, canvas = model.initial_state(x.shape[-2], x)
        enc_state, image = dec_state, self.read_image(x)
        out = {"z": [], "q": [], "p": [], "writes": []}
        for t in range(1, self.num_steps + 1):
            p = model.prior(dec_state[0])
            if t <= k:
                enc_state = self.encode_step(x, canvas, dec_state[0], enc_state, image)
                q = self.posterior(enc_state[0])
                z = q.rsample() if posterior == "sample" else q.mean
            else:
                q = None
                z = p.sample() if rest == "sample" else p.mean
            dec_state, canvas, write = model.decode_step(z, dec_state, canvas)
            for key, value in (("z", z), ("q", q), ("p", p), ("writes", write)):
                out[key].append(value)
        out["canvas"] = canvas
        return out

    @torch.no_grad()
    def kl_per_step(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``(N, T)``: KL(q(z_t | x, z_{<t}) || p(z_t | z_{<t})) of each step, in bits, with
        z_{<t} drawn from q (averaged over ``num_samples`` draws). Its sum over steps is the
        KL term of the ELBO (the total the steps spend); its mean over images, per step, is
        Gregor et al.'s bits per step."""
        xs = x.expand((num_samples,) + x.shape)
        run = self.trajectory(xs)
        kl = torch.stack([kl_divergence(q, p) for q, p in zip(run["q"], run["p"])], -1)  # (S, N, T)
        return kl.mean(0) / LN2

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, k: int, rest: str = "mean") -> torch.Tensor:
        """``sigmoid(c_T)`` ``(N, x_dim)`` from the posterior means of the first ``k`` steps,
        the later latents from the prior (its mean, or a draw with ``rest="sample"``):
        conceptual compression, k = T a full reconstruction, k = 0 an image from the prior alone."""
        return torch.sigmoid(self.trajectory(x, k, posterior="mean", rest=rest)["canvas"])
