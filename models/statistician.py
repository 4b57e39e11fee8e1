"""The Neural Statistician (Edwards & Storkey 2016): a model of data *sets*.

Each set :math:`D = (x_1, \\dots, x_M)` has a context :math:`c` shared by its items, and
each item a latent :math:`z_i` (Edwards & Storkey, section 3, with one stochastic layer of
:math:`z` where the paper stacks several):

.. math::
    c &\\sim p(c) = \\mathcal{N}(0, I), \\\\
    z_i \\mid c &\\sim p(z \\mid c) = \\mathcal{N}(\\mu_z(c), \\operatorname{diag}\\sigma^2_z(c)), \\\\
    x_i \\mid z_i, c &\\sim p(x \\mid z_i, c) \\qquad (i = 1..M),

so :math:`p(D) = \\int p(c) \\prod_i \\int p(x_i \\mid z_i, c)\\, p(z_i \\mid c)\\, dz_i\\, dc`.
The observation is Bernoulli (binary items, e.g. images) or Gaussian with a mean *and* a
scale from the decoder (real items, e.g. the paper's 1-D samples). The guide
(guides/statistician.py) is :math:`q(c \\mid D) \\prod_i q(z_i \\mid x_i, c)`, with
:math:`q(c \\mid D)` read from the mean of per-item features (the exchangeable statistic
network), and the ELBO per set is the paper's eq. 3:

.. math:: \\sum_i \\Big(\\mathbb{E}_{q}[\\log p(x_i \\mid z_i, c)]
          - \\mathbb{E}_{q(c|D)}\\mathrm{KL}(q(z_i \\mid x_i, c) \\,\\|\\, p(z_i \\mid c))\\Big)
          - \\mathrm{KL}(q(c \\mid D) \\,\\|\\, p(c)).

The plates nest: ``sets`` (dim -2, the data plate: one log-weight per set) holds ``c``; the
``items`` plate (dim -1) inside it holds ``z`` and ``x``. The batch is
``{"x": (S, M, D), "mask": (S, M) bool}`` (:mod:`pyrovae.data.sets`); the item sites are
masked with ``mask``, so padded items contribute nothing to the loss or the log-weights, and
importance sampling with the guide as proposal estimates :math:`\\log p(D)` over :math:`c`
and :math:`z_{1..M}` jointly.

References

[1] Edwards, Storkey. Towards a Neural Statistician. ICLR 2017. arXiv:1606.02185
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from pyrovae.data.sets import as_sets
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.nn.conv import PixelCNN, check_stacks, image_shape_for
from pyrovae.models.base import Model, broadcast_cat
from pyrovae.registry import register_model

__all__ = ["NeuralStatistician", "broadcast_cat"]

Likelihood = Literal["bernoulli", "gaussian"]
LIKELIHOODS = typing.get_args(Likelihood)
Decoder = Literal["mlp", "pixelcnn"]
MIN_SCALE = 1e-3


@register_model("statistician")
class NeuralStatistician(Model):
    """p(c) p(z | c) p(x | z, c) over sets of items (Edwards & Storkey 2016).

    :param int x_dim: size of one (flattened) item.
    :param int c_dim: size of the context c (one per set).
    :param int z_dim: size of each item's latent z.
    :param tuple hidden_dims: hidden widths of the prior network c -> z and the decoder
        [z, c] -> x.
    :param str likelihood: ``bernoulli`` (binary items) or ``gaussian`` (mean and scale from
        the decoder); unset (None), the set data sets fill it in from their items (``pyrovae
        fit --data synthetic-sets`` is Gaussian), else ``bernoulli``.
    :param str activation: nonlinearity.
    :param str decoder: ``mlp`` (the default) or ``pixelcnn``: p(x | z, c) a gated PixelCNN over
        each item's pixels conditioned on ``[z, c]`` (:class:`pyrovae.nn.conv.PixelCNN`; binary
        items only; as the Variational Homoencoder's paper decodes Omniglot).
    :param int num_layers, pixel_channels, first_kernel_size, kernel_size, pixel_stacks: the
        PixelCNN's.
    :param tuple image_shape: ``(H, W)`` of an item for the PixelCNN; None: square.

    >>> model = NeuralStatistician(x_dim=1, c_dim=2, z_dim=3, hidden_dims=(8,), likelihood="gaussian")
    >>> model.generate(torch.zeros(4, 2), num_items=6).shape
    torch.Size([4, 6, 1])
    """

    guide_name = "statistician"
    likelihoods = LIKELIHOODS
    cannot_sample = 'a model of sets: draw whole sets with model.sample_sets(num_sets, num_items)'
    data_plate = "sets"

    @dataclass
    class Options:
        x_dim: int
        c_dim: int = 3
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = (128, 128)
        likelihood: Optional[Likelihood] = None
        activation: str = "relu"
        decoder: Decoder = "mlp"
        num_layers: int = 3
        pixel_channels: int = 16
        first_kernel_size: int = 5
        kernel_size: int = 3
        pixel_stacks: int = 2
        image_shape: Optional[Tuple[int, ...]] = None

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            if self.likelihood is None:  # not given: the data's (a set data set fills it), else bernoulli
                self.likelihood = "bernoulli"
            check_positive(x_dim=self.x_dim, c_dim=self.c_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)
            if self.decoder == "pixelcnn":
                if self.likelihood != "bernoulli":
                    raise ValueError("decoder='pixelcnn' models binary items (a Bernoulli per pixel); the items are "
                                     f"{self.likelihood}: use decoder='mlp' (--decoder mlp)")
                check_positive(num_layers=self.num_layers, pixel_channels=self.pixel_channels)
                check_stacks(self.pixel_stacks, "pixel_stacks")
                if self.image_shape is not None:
                    self.image_shape = tuple(self.image_shape)
                image_shape_for(self.x_dim, self.image_shape)  # raises where the shape does not fit x_dim

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.c_dim, self.z_dim, self.likelihood_name = o.x_dim, o.c_dim, o.z_dim, o.likelihood
        self.prior_net = MLP(o.c_dim, o.hidden_dims, 2 * o.z_dim, o.activation)
        if o.decoder == "pixelcnn":
            self.image_shape = image_shape_for(o.x_dim, o.image_shape)
            self.decoder = PixelCNN(self.image_shape, o.z_dim + o.c_dim, o.num_layers, o.pixel_channels,
                                    o.first_kernel_size, o.kernel_size, None, stacks=o.pixel_stacks)
        else:
            outputs = o.x_dim * (2 if o.likelihood == "gaussian" else 1)
            self.decoder = MLP(o.z_dim + o.c_dim, o.hidden_dims, outputs, o.activation)

    @property
    def default_init(self) -> str:
        """fit's default init (:func:`pyrovae.nn.default_init`): ``burda`` for binary items,
        ``torch`` for real ones. Measured on the synthetic families (docs/sets.md): Glorot's
        layers (zero biases, weights U(+-0.30) from a 1-D item) leave the statistic network's
        pooled features nearly blind to a set's shape; the family from c is then near chance
        (0.32 against 0.53 with torch's layers) and the test ELBO 0.039 nats per item lower.
        With the PixelCNN decoder ``torch`` (it has no output bias per pixel to start)."""
        return "torch" if self.likelihood_name == "gaussian" or self.options.decoder == "pixelcnn" else "burda"

    def prior_c(self, like: torch.Tensor) -> dist.Distribution:
        """p(c) = N(0, I), on ``like``'s device and dtype."""
        return dist.Normal(like.new_zeros(self.c_dim), 1.0).to_event(1)

    def prior_z(self, c: torch.Tensor) -> dist.Distribution:
        """p(z | c): a diagonal Normal, batch shape ``c.shape[:-1]``."""
        loc, raw_scale = self.prior_net(c).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    def observation(self, z: torch.Tensor, c: torch.Tensor, x: Optional[torch.Tensor] = None) -> dist.Distribution:
        """p(x | z, c), batch shape the broadcast of ``z`` and ``c``'s leading dimensions; the
        PixelCNN decoder's needs the items ``x`` it scores (each pixel given those before it)."""
        if self.options.decoder == "pixelcnn":
            if x is None:
                raise ValueError("the PixelCNN decoder's p(x | z, c) is over the items x it is given (each pixel "
                                 "conditioned on the ones before it): pass x, or draw items with generate")
            cond = broadcast_cat(z, c)
            return dist.Bernoulli(logits=self.decoder(x, cond), validate_args=False).to_event(1)
        out = self.decoder(broadcast_cat(z, c))
        if self.likelihood_name == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        loc, raw_scale = out.split(self.x_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the decoder's output at the mean of the sets' real items (``init="burda"``, the
        default of ``fit``): its logits (Bernoulli), or the Gaussian's mean (the scale outputs
        keep their bias)."""
        if self.options.decoder == "pixelcnn":
            raise ValueError("init='burda' sets the MLP decoder's output bias per pixel; the PixelCNN decoder has "
                             "none: use init='torch' (its default) or 'glorot'")
        x, mask = as_sets(x, mask)
        items = x[mask]
        if self.likelihood_name == "bernoulli":
            bias_at_data_logits_(self.decoder[-1], items)
        else:
            self.decoder[-1].bias[:self.x_dim] = items.mean(0).to(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, sizes: Optional[torch.Tensor] = None):
        """The model of the sets ``x`` ``(S, M, D)`` with ``mask`` ``(S, M)`` (``sizes``, a batch
        key of the set data sets, is accepted and unused: the mask carries it)."""
        x, mask = as_sets(x, mask)
        num_sets, num_items = x.shape[:2]
        with pyro.plate("sets", num_sets, dim=-2):
            c = pyro.sample("c", self.prior_c(x))  # (S, 1, C): one per set
            with pyro.plate("items", num_items, dim=-1), poutine.mask(mask=mask):
                z = pyro.sample("z", self.prior_z(c))  # (S, M, Z)
                pyro.sample("x", self.observation(z, c, x), obs=x)

    def example_batch(self, n: int = 16, num_items: int = 5, seed: int = 0) -> dict:
        """A small fixed batch of ``n`` sets (the contract tests'): sizes 2 to ``num_items``,
        binary or real items as the likelihood wants, padding zeros."""
        g = torch.Generator().manual_seed(seed)
        sizes = torch.randint(2, num_items + 1, (n,), generator=g)
        sizes[0] = num_items
        mask = torch.arange(num_items) < sizes[:, None]
        if self.likelihood_name == "bernoulli":
            x = torch.bernoulli(torch.full((n, num_items, self.x_dim), 0.3), generator=g)
        else:
            x = torch.randn(n, num_items, self.x_dim, generator=g)
        return {"x": x * mask[..., None], "mask": mask, "sizes": sizes}

    @torch.no_grad()
    def generate(self, c: torch.Tensor, num_items: int, mean: bool = True) -> torch.Tensor:
        """``(S, num_items, x_dim)`` new items of the sets whose contexts are ``c`` ``(S, c_dim)``:
        z ~ p(z | c), then the mean of p(x | z, c) (``mean``) or a draw (always a draw with the
        PixelCNN decoder, one pixel after another)."""
        c = c[:, None, :]
        z = self.prior_z(c).sample((num_items,)).squeeze(-2).transpose(0, 1)  # (S, num_items, Z)
        if self.options.decoder == "pixelcnn":  # pixel by pixel, draws (the autoregressive mean is intractable)
            x = z.new_zeros(*z.shape[:-1], self.x_dim)
            for i in range(self.x_dim):
                x[..., i] = self.observation(z, c, x).base_dist.sample()[..., i]
            return x
        px = self.observation(z, c)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def sample_sets(self, num_sets: int, num_items: int, mean: bool = True) -> torch.Tensor:
        """``(num_sets, num_items, x_dim)``: whole new sets, c ~ p(c) then :meth:`generate`."""
        like = next(self.parameters())
        return self.generate(self.prior_c(like).sample((num_sets,)), num_items, mean)
