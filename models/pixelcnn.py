"""The VAE with a PixelCNN decoder conditioned on z (PixelVAE, Gulrajani et al. 2016; the
decoder of van den Oord et al. 2016), and the posterior collapse it invites.

.. math::
    z_n \\sim \\mathcal{N}(0, I), \\qquad
    x_n \\mid z_n \\sim \\prod_{i=1}^{D} p\\big(x_{n,i} \\mid x_{n,<i},\\ z_n\\big),

pixels in raster order, each conditional from a stack of gated masked convolutions
(:class:`pyrovae.nn.conv.PixelCNN`: mask A in the first layer, B after; z enters every layer by
a learned projection: ``global``, a per-channel bias, or ``spatial``, a feature map of the
image's size decoded from z, as in PixelVAE). The likelihood is ``bernoulli`` (binarized MNIST) or
``logistic-mixture`` (8-bit grey levels, PixelCNN++'s discretized logistic mixture).

A decoder this strong can model p(x) on its own, and the ELBO
``E_q log p(x|z) - KL(q(z|x) || p(z))`` then pays the KL for nothing: the optimum is
q(z|x) = p(z), the latent unused (Chen et al. 2017, VLAE; Zhao, Song, Ermon 2017, "Towards
deeper understanding of variational autoencoding models"). Two cures, both options here:

* the InfoVAE objective (``--objective infovae``): MMD between the aggregate posterior and the
  prior in place of (alpha = 1) or besides the per-datapoint KL, which no longer pushes each
  q(z|x) onto the prior (Zhao, Song, Ermon 2017, "InfoVAE");
* a local decoder (VLAE): few layers with small kernels (``--num-layers 2 --first-kernel-size 3``),
  so that the decoder sees only a few neighbouring pixels and the global structure must come
  through z; with z as a spatial map (``--conditioning spatial``, as VLAE and PixelVAE feed it),
  since a per-channel bias cannot say where the strokes go (measured in docs/autoregressive.md:
  the local decoder keeps z informative with spatial conditioning, not with global).

Sampling x is sequential (one network pass per pixel).

References

[1] van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu. Conditional Image
    Generation with PixelCNN Decoders. NeurIPS 2016, arXiv:1606.05328
[2] Gulrajani et al. PixelVAE: A Latent Variable Model for Natural Images. arXiv:1611.05013
[3] Chen, Kingma, Salimans, Duan, Dhariwal, Schulman, Sutskever, Abbeel. Variational Lossy
    Autoencoder. ICLR 2017, arXiv:1611.02731
[4] Zhao, Song, Ermon. Towards Deeper Understanding of Variational Autoencoding Models.
    arXiv:1702.08658; InfoVAE: Information Maximizing Variational Autoencoders. arXiv:1706.02262
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from pyrovae.nn.conv import Conditioning, PixelCNN, check_stacks, image_shape_for
from pyrovae.models.conv import LIKELIHOODS, Likelihood, mixture_likelihood, observed_value
from pyrovae.nn import check_positive, conv_bias_at_data_mean_
from pyrovae.models.base import Model, StandardNormalPrior
from pyrovae.registry import register_model


@register_model("pixelcnn-vae")
class PixelCNNVAE(StandardNormalPrior, Model):
    """p(z) prod_i p(x_i | x_<i, z) with a gated PixelCNN decoder.

    :param int x_dim: size of one flattened image (one channel).
    :param int z_dim: latent dimension.
    :param tuple image_shape: ``(H, W)`` or ``(1, H, W)``; None: square from x_dim.
    :param int num_layers: gated masked layers (first mask A, then mask B).
    :param int pixel_channels: channels of each layer.
    :param int first_kernel_size: kernel of the mask-A layer (7 in van den Oord et al.).
    :param int kernel_size: kernel of the later layers.
    :param str conditioning: ``global`` (z a per-channel bias in every layer, the same at every
        pixel) or ``spatial`` (z decoded to a feature map of the image's size first, PixelVAE's way).
    :param int pixel_stacks: 1: masked convolutions (one stack, a blind spot above-right of each
        pixel); 2: van den Oord et al.'s vertical and horizontal stacks, without it.
    :param str likelihood: ``bernoulli`` or ``logistic-mixture``.
    :param int num_mixtures: logistic components per pixel.
    :param int num_bins: grey levels.

    >>> model = PixelCNNVAE(x_dim=16, z_dim=2, num_layers=2, pixel_channels=4)
    >>> model(num_samples=3).shape
    torch.Size([3, 16])
    """

    guide_name = "conv"
    likelihoods = LIKELIHOODS
    sequential_sampling = True  # x_dim network passes per draw: fit leaves samples.png to `pyrovae sample`

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        image_shape: Optional[Tuple[int, ...]] = None
        num_layers: int = 5
        pixel_channels: int = 32
        first_kernel_size: int = 7
        kernel_size: int = 3
        conditioning: Conditioning = "global"
        pixel_stacks: int = 1
        likelihood: Likelihood = "bernoulli"
        num_mixtures: int = 5
        num_bins: int = 256

        def __post_init__(self):
            if self.image_shape is not None:
                self.image_shape = tuple(self.image_shape)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, num_layers=self.num_layers,
                           pixel_channels=self.pixel_channels, first_kernel_size=self.first_kernel_size,
                           kernel_size=self.kernel_size, num_mixtures=self.num_mixtures)
            if self.first_kernel_size % 2 == 0 or self.kernel_size % 2 == 0:
                raise ValueError("first_kernel_size and kernel_size must be odd, got "
                                 f"{self.first_kernel_size} and {self.kernel_size}")
            check_stacks(self.pixel_stacks, "pixel_stacks")
            if self.num_bins < 2:
                raise ValueError(f"num_bins must be at least 2, got {self.num_bins}")
            if image_shape_for(self.x_dim, self.image_shape)[0] != 1:
                raise ValueError(f"pixelcnn-vae models grey images (one channel), got image_shape {self.image_shape}; "
                                 f"read colour images as grey (--color grey)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim = o.x_dim, o.z_dim
        self.image_shape = image_shape_for(o.x_dim, o.image_shape)
        out = None if o.likelihood == "bernoulli" else 3 * o.num_mixtures
        self.decoder = PixelCNN(self.image_shape, o.z_dim, o.num_layers, o.pixel_channels, o.first_kernel_size,
                                o.kernel_size, out, conditioning=o.conditioning, stacks=o.pixel_stacks)
        self.standard_normal_prior_(o.z_dim)

    @property
    def receptive_rows(self) -> int:
        """How many rows above a pixel its conditional can see."""
        return self.decoder.receptive_rows

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's output at the data's mean (``init="burda"``, the default of
        ``fit``): the bias of the PixelCNN's last 1x1 convolution at the logits of the mean pixel
        (Bernoulli) or the logistics' locations at it (``logistic-mixture``)."""
        o = self.options
        conv_bias_at_data_mean_(self.decoder.head[-1], x, 1, o.likelihood, o.num_mixtures)

    def likelihood(self, z: torch.Tensor, x: torch.Tensor) -> dist.Distribution:
        """p(x | z) = prod_i p(x_i | x_<i, z), scored at ``x`` (in [0, 1]): event ``(x_dim,)``."""
        out = self.decoder(x, z)
        if self.options.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return mixture_likelihood(out, self.options.num_mixtures, self.options.num_bins)

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        return observed_value(self, x)

    def _scaled(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.options.likelihood == "bernoulli" else value / (self.options.num_bins - 1)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """x ~ p(x | z) in [0, 1], one pixel after another (``x_dim`` passes of the network)."""
        x = z.new_zeros(*z.shape[:-1], self.x_dim)
        for i in range(self.x_dim):
            px = self.likelihood(z, x).base_dist
            value = px.sample()[..., i]
            x[..., i] = self._scaled(value)
        return x

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model: ``x`` observed (``(N, x_dim)``), or ``num_samples`` fresh draws (in [0, 1])."""
        n = self.batch_size(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            if x is None:  # draw x pixel by pixel, then score it at the same site
                drawn = self.generate(z)
                pyro.sample("x", self.likelihood(z, drawn), obs=self.observed(drawn))
                return drawn
            pyro.sample("x", self.likelihood(z, x), obs=self.observed(x))
            return x

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """Draws ``x ~ p(x)`` in [0, 1] (``mean`` is ignored: the autoregressive mean is intractable)."""
        return self.generate(self.prior(num_samples).sample())
