"""A convolutional encoder for images: the amortized diagonal-Gaussian guide of the VAE with
strided convolutions in place of the MLP.

.. math:: q_\\phi(z_n \\mid x_n) = \\mathcal{N}(z_n;\\ \\mu_\\phi(x_n),
          \\operatorname{diag} \\sigma^2_\\phi(x_n)),\\qquad
          (\\mu, \\sigma) = \\text{dense}(\\text{conv}_{3\\times3,\\,/2}(\\dots\\text{conv}_{3\\times3,\\,/2}(x))).

The rows ``x`` (``(N, C*H*W)``) are read as images of ``image_shape`` (a square grey image
when left unset and ``x_dim`` is a square, e.g. 28x28 for 784).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.nn.conv import ConvEncoder, image_shape_for
from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import check_positive
from pyrovae.registry import register_guide


@register_guide("conv")
class ConvGuide(EncoderGuide):
    """q(z | x) a diagonal Normal from a convolutional encoder.

    :param tuple image_shape: ``(H, W)`` or ``(C, H, W)``; None: square grey from ``x_dim``.
    :param tuple channels: channels of the strided 3x3 convolutions.
    :param tuple hidden_dims: dense layers after the convolutions.

    >>> guide = ConvGuide(x_dim=784, z_dim=2, channels=(4, 8))
    >>> guide.encode(torch.zeros(3, 784)).event_shape
    torch.Size([2])
    """

    model_name = "conv-vae"

    @dataclass
    class Options(EncoderGuide.Options):
        hidden_dims: Tuple[int, ...] = (256,)
        activation: str = "relu"
        image_shape: Optional[Tuple[int, ...]] = None
        channels: Tuple[int, ...] = (32, 64)

        def __post_init__(self):
            super().__post_init__()
            self.channels = tuple(self.channels)
            check_positive(channels=self.channels)
            if self.image_shape is not None:
                self.image_shape = tuple(self.image_shape)
            image_shape_for(self.x_dim, self.image_shape)  # checks it

    def encoder_outputs(self) -> Optional[int]:
        return None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.encoder = ConvEncoder(image_shape_for(o.x_dim, o.image_shape), 2 * self.z_dim, o.channels,
                                   o.hidden_dims, o.activation)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)
