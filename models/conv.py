"""The VAE with a convolutional decoder, for images.

.. math::
    z_n \\sim \\mathcal{N}(0, I), \\qquad
    x_n \\mid z_n \\sim \\prod_{i=1}^{D} p(x_{n,i} \\mid \\eta_i(z_n)),\\qquad
    \\eta(z) = \\text{deconv}_{4\\times4,\\,\\times2}(\\dots\\text{deconv}_{4\\times4,\\,\\times2}(\\text{dense}(z))),

pixels independent given z. The likelihood is ``bernoulli`` (binary images; eta the logits) or
``logistic-mixture``, the discretized logistic mixture of PixelCNN++ (Salimans et al. 2017)
over the 256 grey levels of 8-bit images, eta the logits, locations and log-scales of
``num_mixtures`` components per pixel. That likelihood reads x in [0, 1] as ``x * 255``, the
grey level (the data sets' ``binarize="none"``: ``--binarize none``), and its log p(x) is in
nats over the discrete grey levels: bits per dimension are ``-log p(x) / (D ln 2)``.

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
[2] Salimans, Karpathy, Chen, Kingma. PixelCNN++. ICLR 2017, arXiv:1701.05517
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from pyrovae.nn.conv import ConvDecoder, image_shape_for
from pyrovae.distributions.discretized_logistic import DiscretizedLogisticMixture
from pyrovae.nn import check_positive, conv_bias_at_data_mean_
from pyrovae.models.base import Model, StandardNormalPrior
from pyrovae.registry import register_model

Likelihood = Literal["bernoulli", "logistic-mixture"]
LIKELIHOODS = typing.get_args(Likelihood)


def observed_value(model, x: torch.Tensor) -> torch.Tensor:
    """The value ``model``'s likelihood scores: ``x`` itself (Bernoulli) or its grey levels,
    whose grid is checked on the model's first batch only: the check reads the data on the
    host, and a step that does so every time cannot run in a CUDA graph."""
    if model.options.likelihood == "bernoulli":
        return x
    check = not getattr(model, "_grid_checked", False)
    levels = grey_levels(x, model.options.num_bins, check=check)
    model._grid_checked = True
    return levels


def grey_levels(x: torch.Tensor, num_bins: int, check: bool = True) -> torch.Tensor:
    """``x`` in [0, 1] as the integer grey levels ``x * (num_bins - 1)``; with ``check``, a clear
    error when ``x`` is not on that grid (binarized, or scaled otherwise)."""
    levels = x * (num_bins - 1)
    rounded = levels.round()
    if check and not torch.compiler.is_compiling() and ((levels - rounded).abs().max() > 1e-3 or rounded.min() < 0
                                                        or rounded.max() > num_bins - 1):
        raise ValueError(f"the logistic-mixture likelihood needs grey levels k / {num_bins - 1} in [0, 1] "
                         f"(8-bit images scaled to [0, 1]); load the data unbinarized (--binarize none)")
    return rounded


def mixture_likelihood(params: torch.Tensor, num_mixtures: int, num_bins: int) -> dist.Distribution:
    """``params (..., 3 K, D)`` -> independent discretized logistic mixtures over D pixels."""
    logits, locs, log_scales = params.movedim(-2, -1).split(num_mixtures, dim=-1)  # each (..., D, K)
    return DiscretizedLogisticMixture(logits, torch.tanh(locs), log_scales, num_bins).to_event(1)


@register_model("conv-vae")
class ConvVAE(StandardNormalPrior, Model):
    """p(z) p(x | z) with a convolutional decoder.

    :param int x_dim: size of one flattened image.
    :param int z_dim: latent dimension.
    :param tuple image_shape: ``(H, W)`` or ``(C, H, W)``; None: a square grey image from x_dim.
    :param tuple channels: channels of the feature maps, finest first (the conv guide's order;
        the decoder runs them in reverse).
    :param tuple hidden_dims: dense layers from z to the smallest feature map.
    :param str activation: the decoder's nonlinearity.
    :param str likelihood: ``bernoulli`` or ``logistic-mixture``.
    :param int num_mixtures: logistic components per pixel.
    :param int num_bins: grey levels (256: 8 bits).

    >>> model = ConvVAE(x_dim=784, z_dim=2, channels=(4, 8))
    >>> model.sample(3).shape
    torch.Size([3, 784])
    """

    guide_name = "conv"
    likelihoods = LIKELIHOODS

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        image_shape: Optional[Tuple[int, ...]] = None
        channels: Tuple[int, ...] = (32, 64)
        hidden_dims: Tuple[int, ...] = (256,)
        activation: str = "relu"
        likelihood: Likelihood = "bernoulli"
        num_mixtures: int = 5
        num_bins: int = 256

        def __post_init__(self):
            self.channels, self.hidden_dims = tuple(self.channels), tuple(self.hidden_dims)
            if self.image_shape is not None:
                self.image_shape = tuple(self.image_shape)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, channels=self.channels, hidden_dims=self.hidden_dims,
                           num_mixtures=self.num_mixtures)
            if self.num_bins < 2:
                raise ValueError(f"num_bins must be at least 2, got {self.num_bins}")
            image_shape_for(self.x_dim, self.image_shape)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim = o.x_dim, o.z_dim
        self.image_shape = image_shape_for(o.x_dim, o.image_shape)
        out = None if o.likelihood == "bernoulli" else 3 * o.num_mixtures
        self.decoder = ConvDecoder(o.z_dim, self.image_shape, tuple(reversed(o.channels)), out, o.hidden_dims,
                                   o.activation)
        self.standard_normal_prior_(o.z_dim)

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's output at the data's mean (``init="burda"``, the default of
        ``fit``): the last transposed convolution's bias, one per output channel, at the logits
        of each colour channel's mean pixel (Bernoulli) or the logistics' locations at it
        (``logistic-mixture``); docs/autoregressive.md has what it is worth."""
        o = self.options
        conv_bias_at_data_mean_(self.decoder.deconvs[-1], x, self.image_shape[0], o.likelihood, o.num_mixtures)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) over the pixels: event shape ``(x_dim,)``. For ``logistic-mixture`` its
        values are grey levels ``0..num_bins - 1``."""
        out = self.decoder(z)
        if self.options.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return mixture_likelihood(out, self.options.num_mixtures, self.options.num_bins)

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The value the likelihood scores: x itself, or its grey levels."""
        return observed_value(self, x)

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model: ``x`` observed (``(N, x_dim)``), or ``num_samples`` fresh draws (in [0, 1])."""
        n = self.batch_size(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            value = pyro.sample("x", self.likelihood(z), obs=None if x is None else self.observed(x))
        return value if self.options.likelihood == "bernoulli" else value / (self.options.num_bins - 1)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draws ``x ~ p(x)`` in [0, 1] (the likelihood's mean given z ~ p(z) when ``mean``)."""
        px = self.likelihood(self.prior(num_samples).sample())
        value = px.mean if mean else px.sample()
        return value if self.options.likelihood == "bernoulli" else value / (self.options.num_bins - 1)
