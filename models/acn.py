"""Associative Compression Networks (Graves, Menick, van den Oord 2018): a VAE whose prior of
each code is conditioned on the code of a *neighbouring* training datapoint.

.. math::
    \\hat z_n \\sim \\mathrm{Uniform}\\big(\\mathrm{KNN}_K(\\mu_\\phi(x_n))\\big), \\qquad
    z_n \\mid \\hat z_n \\sim p_\\theta(z \\mid \\hat z_n) = \\mathcal{N}\\big(\\mu_\\theta(\\hat z_n),
        \\operatorname{diag}\\sigma^2_\\theta(\\hat z_n)\\big), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n),

where :math:`\\mu_\\phi(x)` is the mean of the guide's :math:`q(z \\mid x)` (the *code* of x) and
:math:`\\mathrm{KNN}_K(c)` the codes of the :math:`K` training datapoints nearest to :math:`c`
(x's own excluded). The training loss per datapoint is the paper's coding cost,

.. math:: \\mathrm{KL}\\big(q(z \\mid x_n)\\,\\|\\,p(z \\mid \\hat z_n)\\big) - \\mathbb{E}_q \\log p(x_n \\mid z),

i.e. the ELBO with the conditional prior: the cost of sending :math:`x_n` to a receiver who
already holds a neighbour. Because neighbours' codes are close, the KL stays small even when the
code carries much information, so a powerful decoder no longer gains by ignoring z (the
unconditional prior makes every bit of the code cost its KL; the ACN's prior makes it cost only
what the neighbour does not say).

The codes of the training set live in a :class:`~pyrovae.models.acn_table.CodeTable` (a buffer of
the model: it is saved in the run's checkpoint, and a resumed run continues with it). In
training each batch carries ``index`` (the rows' positions in the training set: ``--data
digits-indexed`` / ``mnist-indexed`` or :func:`~pyrovae.data.indexed.with_index`); the model
stores the batch's codes (posterior means, no gradient) in those rows, then draws each row's
neighbour uniformly among its K nearest (exact batched search,
:func:`~pyrovae.models.acn_table.knn`). Out of training (``eval()``: validation, ``log_likelihood``,
``evaluate``) nothing is written and the prior is the uniform mixture over the K nearest
training codes, :math:`\\frac1K \\sum_k p(z \\mid \\hat z_k)` (a density of z given the table;
by Jensen its KL is at most the training loss's average over the K). Before the table holds K
codes the prior is :math:`p(z \\mid \\hat z = 0)`. Because the neighbours are chosen by x's own
code, :math:`\\int p(x \\mid z)\\, p(z \\mid \\hat z(x))\\, dz` is not a normalized density
of x: an importance-sampled "log-likelihood" of this model (``pyrovae evaluate``) is the
negative coding cost given the neighbours, as the paper counts it, without the cost of naming
the neighbour (which the paper's ordered transmission of the whole data set bounds); it is not
comparable with a VAE's log p(x).

``prior="standard"`` is the plain VAE with the same networks (:math:`p(z) = \\mathcal{N}(0,
I)`), the paper's baseline. The decoder is an MLP (``decoder="mlp"``, Bernoulli) or a gated
PixelCNN conditioned on z (``decoder="pixelcnn"``, :class:`pyrovae.nn.conv.PixelCNN`, as
``pixelcnn-vae``). The guide is ``acn`` (guides/acn.py): :math:`q(z \\mid x)`, bound to the model
(:func:`~pyrovae.registry.pair_guide`) so that the model reads its codes.

*Daydreaming* (:meth:`AssociativeCompressionNetwork.daydream`): from a code, pick one of its K
nearest training codes, draw z from the prior conditioned on it, decode, encode, repeat.

References

[1] Graves, Menick, van den Oord. Associative Compression Networks for Representation Learning.
    arXiv:1804.02476 (2018)
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.nn.conv import PixelCNN, check_stacks, image_shape_for
from pyrovae.errors import UsageError
from pyrovae.models.acn_table import CodeTable
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["AssociativeCompressionNetwork"]

Prior = Literal["knn", "standard"]
PRIORS = typing.get_args(Prior)
Decoder = Literal["mlp", "pixelcnn"]
DECODERS = typing.get_args(Decoder)
MIN_SCALE = 1e-3


@register_model("acn")
class AssociativeCompressionNetwork(Model):
    """p(z | z_neighbour) p(x | z), the neighbour a nearby training code (Graves et al. 2018).

    :param int x_dim: one flattened (binary) image.
    :param int z_dim: the code's size.
    :param tuple hidden_dims: hidden widths of the prior network (and of the MLP decoder).
    :param str prior: ``knn`` (the ACN) or ``standard`` (N(0, I): the VAE baseline).
    :param int num_neighbours: K, the neighbours one is drawn from.
    :param str activation: the networks' nonlinearity.
    :param str decoder: ``mlp`` or ``pixelcnn``.
    :param int num_layers, pixel_channels, first_kernel_size, kernel_size: the PixelCNN's.
    :param int pixel_stacks: the PixelCNN's stacks (:class:`pyrovae.nn.conv.PixelCNN`): 2 (the
        default: the paper's gated PixelCNN, van den Oord et al.'s vertical and horizontal stacks,
        no blind spot) or 1 masked convolutions (a blind spot; 0.6 of the step's time).
    :param tuple image_shape: ``(H, W)`` for the PixelCNN; None: square.
    :param int search_chunk: table rows compared at a time in the neighbour search.

    >>> model = AssociativeCompressionNetwork(x_dim=16, z_dim=2, hidden_dims=(8,))
    >>> model.table.size
    0
    """

    guide_name = "acn"
    replays_step = False  # the neighbour table checks its indices on the host and is written in place
    cannot_sample = ("its prior p(z | c) is conditioned on the code of a neighbouring datapoint, so a draw "
                     "needs data to start from")

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = (256,)
        activation: str = "relu"
        prior: Prior = "knn"
        num_neighbours: int = 5
        decoder: Decoder = "mlp"
        num_layers: int = 4
        pixel_channels: int = 32
        pixel_stacks: int = 2
        first_kernel_size: int = 7
        kernel_size: int = 3
        image_shape: Optional[Tuple[int, ...]] = None
        search_chunk: int = 16384

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            if self.image_shape is not None:
                self.image_shape = tuple(self.image_shape)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims,
                           num_neighbours=self.num_neighbours, num_layers=self.num_layers,
                           pixel_channels=self.pixel_channels, search_chunk=self.search_chunk)
            check_stacks(self.pixel_stacks, "pixel_stacks")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim, self.num_neighbours = o.x_dim, o.z_dim, o.num_neighbours
        self.prior_net = MLP(o.z_dim, o.hidden_dims, 2 * o.z_dim, o.activation) if o.prior == "knn" else None
        if o.decoder == "pixelcnn":
            self.image_shape = image_shape_for(o.x_dim, o.image_shape)
            self.decoder = PixelCNN(self.image_shape, o.z_dim, o.num_layers, o.pixel_channels, o.first_kernel_size,
                                    o.kernel_size, None, stacks=o.pixel_stacks)
        else:
            self.decoder = MLP(o.z_dim, o.hidden_dims, o.x_dim, o.activation)
        self.table = CodeTable(o.z_dim, chunk=o.search_chunk)
        self._guide = (None,)  # a tuple: the guide is not a submodule (its parameters are its own)

    # ---------------------------------------------------------------- the guide's codes

    def bind_guide(self, guide) -> None:
        """Read codes (posterior means) from ``guide.encode`` from now on."""
        self._guide = (guide,)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes of ``x`` ``(N, x_dim)``: the means of the bound guide's q(z | x), ``(N, z_dim)``."""
        guide = self._guide[0]
        if guide is None:
            raise UsageError("the acn model reads codes from its guide: pair them (pyrovae.registry.pair_guide("
                             "model, guide), or guide.bind_model(model)); `pyrovae fit --model acn` does it")
        return guide.encode(x).mean

    # ---------------------------------------------------------------- the prior

    def conditional_prior(self, neighbour: torch.Tensor) -> dist.Distribution:
        """p(z | z_neighbour): a diagonal Normal, batch shape ``neighbour.shape[:-1]``."""
        loc, raw_scale = self.prior_net(neighbour).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    def neighbour_rows(self, codes: torch.Tensor, exclude: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """``(N, K)``: the table rows of the K nearest codes (None while the table holds too few)."""
        needed = self.num_neighbours + (1 if exclude is not None else 0)
        if self.table.num_filled < needed:
            return None
        return self.table.neighbours(codes, self.num_neighbours, exclude=exclude)[1]

    def prior(self, x: torch.Tensor, index: Optional[torch.Tensor] = None) -> dist.Distribution:
        """The prior of the codes of ``x``'s rows (batch shape ``(N,)``); in training with
        ``index``, the table is refreshed with their codes first (see the module docstring)."""
        n = x.shape[0]
        if self.prior_net is None:
            return dist.Normal(x.new_zeros(n, self.z_dim), 1.0).to_event(1)
        codes = self.codes(x)
        if self.training:
            if index is None:
                raise UsageError("acn trains with each row's index in the training set (the batch key 'index'): "
                                 "use --data digits-indexed or mnist-indexed, or pyrovae.data.indexed.with_index(data)")
            self.table.update(index, codes)
            rows = self.neighbour_rows(codes, exclude=index.to(codes.device).long())
            if rows is None:
                return self.conditional_prior(torch.zeros_like(codes))
            pick = torch.randint(self.num_neighbours, (n, 1), device=codes.device)
            return self.conditional_prior(self.table.codes[rows.gather(1, pick)[:, 0]].to(x.dtype))
        rows = self.neighbour_rows(codes)
        if rows is None:
            return self.conditional_prior(torch.zeros_like(codes))
        components = self.conditional_prior(self.table.codes[rows].to(x.dtype))  # batch (N, K)
        mixing = dist.Categorical(logits=x.new_zeros(n, self.num_neighbours))
        return dist.MixtureSameFamily(mixing, components)

    # ---------------------------------------------------------------- the observation

    @property
    def default_init(self) -> str:
        """``burda`` with the MLP decoder (its output bias per pixel), ``torch`` with the PixelCNN."""
        return "burda" if self.options.decoder == "mlp" else "torch"

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the MLP decoder's output at the logits of the data's mean pixel (``init="burda"``)."""
        if self.options.decoder != "mlp":
            raise ValueError("init='burda' sets the MLP decoder's output bias per pixel; the PixelCNN decoder has "
                             "none: use init='glorot' or 'torch'")
        bias_at_data_logits_(self.decoder[-1], x)

    def likelihood(self, z: torch.Tensor, x: torch.Tensor) -> dist.Distribution:
        """p(x | z) (scored at ``x``: the PixelCNN's conditionals read the pixels before each)."""
        logits = self.decoder(x, z) if self.options.decoder == "pixelcnn" else self.decoder(z)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from codes ``z`` ``(N, z_dim)``: the MLP's means, or the PixelCNN's draws
        (pixel by pixel, ``x_dim`` passes)."""
        if self.options.decoder == "mlp":
            return torch.sigmoid(self.decoder(z))
        x = z.new_zeros(*z.shape[:-1], self.x_dim)
        for i in range(self.x_dim):
            x[..., i] = torch.bernoulli(torch.sigmoid(self.decoder(x, z)[..., i]))
        return x

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, **kwargs):
        """The model of the images ``x`` ``(N, x_dim)``; ``index`` ``(N,)``: their rows in the
        training set (training only). Other batch keys (labels) are accepted and unused."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x, index))
            pyro.sample("x", self.likelihood(z, x), obs=x)

    def example_batch(self, n: int = 16, seed: int = 0) -> dict:
        """A small binary batch with its rows' ``index`` (the contract tests')."""
        g = torch.Generator().manual_seed(seed)
        return {"x": torch.bernoulli(torch.full((n, self.x_dim), 0.3), generator=g), "index": torch.arange(n)}

    @torch.no_grad()
    def daydream(self, x0: torch.Tensor, steps: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Walks through code space from the images ``x0`` ``(N, x_dim)``: ``steps`` times, pick one
        of the K nearest training codes of the current code at random, draw z ~ p(z | it), decode
        it, and take the new image's code. Returns ``(N, steps + 1, x_dim)``, ``x0`` first."""
        if self.prior_net is None:
            raise UsageError("daydreaming walks from code to neighbour: it needs prior='knn'")
        if self.table.num_filled < self.num_neighbours:
            raise UsageError("the code table is empty: train the model (or load a trained run) before daydreaming")
        x, out = x0, [x0]
        for _ in range(steps):
            rows = self.neighbour_rows(self.codes(x))
            pick = torch.randint(self.num_neighbours, (x.shape[0], 1), generator=generator)
            neighbour = self.table.codes[rows.gather(1, pick.to(rows.device))[:, 0]]
            p = self.conditional_prior(neighbour).base_dist
            z = p.loc + p.scale * torch.randn(p.loc.shape, generator=generator).to(p.loc.device)
            x = self.decode(z)
            out.append(x)
        return torch.stack(out, 1)
