"""The recognition network of the conditional VAE (Sohn, Lee, Yan 2015).

.. math:: q_\\phi(z_n \\mid x_n, y_n) = \\mathcal{N}(z_n;\\ \\mu_\\phi(x_n, y_n),
          \\operatorname{diag} \\sigma^2_\\phi(x_n, y_n)),

an MLP on the concatenated input and output ``[x, y]``. It is the proposal of the
importance-sampled :math:`\\log p(y \\mid x)`: the log-weights are
:math:`\\log p(y, z \\mid x) - \\log q(z \\mid x, y)`. With ``deterministic=True`` (Sohn et
al.'s baseline, the model without z) it samples nothing. Pairs with models/cvae.py.

References

[1] Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional
    Generative Models. NeurIPS 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import MLP, check_positive
from pyrovae.registry import register_guide


@register_guide("cvae")
class CVAEGuide(EncoderGuide):
    """q(z | x, y): an MLP on [x, y] -> (loc, scale) of a diagonal Normal (the CVAE's recognition network).

    Options: :class:`~pyrovae.guides.base.EncoderGuide`'s (x_dim, z_dim, hidden_dims,
    activation, site) and

    :param int y_dim: size of the output y (None: the same as ``x_dim``).
    :param bool deterministic: the baseline without z: the guide samples nothing.

    >>> guide = CVAEGuide(x_dim=6, y_dim=4, z_dim=2)
    >>> guide.encode(torch.zeros(3, 6), torch.zeros(3, 4)).event_shape
    torch.Size([2])
    """

    model_name = "cvae"

    @dataclass
    class Options(EncoderGuide.Options):
        y_dim: Optional[int] = None
        deterministic: bool = False

        def __post_init__(self):
            super().__post_init__()
            if self.y_dim is None:
                self.y_dim = self.x_dim
            check_positive(y_dim=self.y_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.y_dim, self.deterministic = self.options.y_dim, self.options.deterministic

    def encoder_outputs(self) -> Optional[int]:
        return None if self.options.deterministic else 2 * self.z_dim

    def mlp(self, out_dim: int) -> MLP:
        """The recognition network ``[x, y] -> out_dim``."""
        return MLP(self.x_dim + self.options.y_dim, self.options.hidden_dims, out_dim, self.options.activation)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """q(z | x, y) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        loc, raw_scale = self.encoder(torch.cat([x, y.to(x.dtype)], -1)).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        if self.deterministic:
            return None
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x, y))
