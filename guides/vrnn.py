"""The VRNN's filtering posterior (Chung et al. 2015, eq. 9).

.. math::
    q(z_{1:T} \\mid x_{1:T}) = \\prod_t \\mathcal{N}(z_t;\\ \\mu_\\phi(\\varphi_x(x_t), g_{t-1}),
        \\operatorname{diag}\\sigma^2_\\phi(\\varphi_x(x_t), g_{t-1})), \\qquad
    g_t = \\operatorname{GRU}([\\varphi_x(x_t), \\varphi_z(z_t)], g_{t-1}),\\ g_0 = 0.

The state :math:`g` has the form of the model's :math:`h` (the same inputs, x_t and the drawn
z_t) but its own weights: a Pyro guide cannot read the model's state, where Chung et al. share
one. The latents are one site ``z`` ``(N, T, Z)``, a :class:`~pyrovae.models.vrnn.RecurrentNormal`
drawn step by step (each draw feeds the state), each ``z_t`` masked with ``mask[:, t]`` like the
model's; the features of every step are computed at once. Pairs with models/vrnn.py.

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

from pyrovae.models.base import broadcast_cat
from pyrovae.models.vrnn import Recurrence, RecurrentNormal, as_steps
from pyrovae.nn import MLP, check_positive
from pyrovae.guides.base import EncoderGuide
from pyrovae.registry import register_guide

__all__ = ["VRNNGuide"]


@register_guide("vrnn")
class VRNNGuide(EncoderGuide):
    """q(z_t | x_t, g_{t-1}): the VRNN's filtering posterior with its own recurrent state.

    Options: the shared encoder options (x_dim: one step's size; z_dim; hidden_dims: the
    widths of every MLP; activation; site: the name of the latent site, ``(N, T, z_dim)``) and

    :param int rnn_dim: size of the guide's own recurrent state g_t (as the model's).
    :param int feature_dim: width of the per-step features of x_t (as the model's).

    >>> guide = VRNNGuide(x_dim=5, z_dim=2, rnn_dim=8, feature_dim=4, hidden_dims=(8,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(3, 4, 5))
    >>> trace.nodes["z"]["value"].shape
    torch.Size([3, 4, 2])
    """

    model_name = "vrnn"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = (64,)
        activation: str = "relu"
        rnn_dim: int = 128
        feature_dim: int = 64

        def __post_init__(self):
            super().__post_init__()
            check_positive(rnn_dim=self.rnn_dim, feature_dim=self.feature_dim)

    def encoder_outputs(self) -> Optional[int]:
        return None  # the encoder reads [phi_x(x_t), g_{t-1}], built below

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.rnn_dim = o.rnn_dim
        self.recurrence = Recurrence(o.x_dim, o.z_dim, o.rnn_dim, o.feature_dim, o.hidden_dims, o.activation)
        self.encoder = MLP(o.feature_dim + o.rnn_dim, o.hidden_dims, 2 * o.z_dim, o.activation)

    def posterior(self, fx: torch.Tensor, g: torch.Tensor) -> dist.Distribution:
        """q(z_t | x_t, g_{t-1}) from the features of x_t: a diagonal Normal."""
        return dist.Normal(*self.posterior_params(fx, g)).to_event(1)

    def posterior_params(self, fx: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of q(z_t | x_t, g_{t-1}) (any leading dims, broadcast)."""
        loc, raw_scale = self.encoder(broadcast_cat(fx, g)).split(self.z_dim, -1)
        return loc, F.softplus(raw_scale) + 1e-4

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        x, mask = as_steps(x, mask)
        fx = self.recurrence.phi_x(x)  # every step's features at once
        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, RecurrentNormal(self.recurrence, self.posterior_params, fx, mask, self.z_dim))
