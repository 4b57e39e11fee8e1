"""The Neural Statistician's guide (Edwards & Storkey 2016, section 3):

.. math::
    q(c, z_{1..M} \\mid D) = q(c \\mid D) \\prod_i q(z_i \\mid x_i, c), \\qquad
    q(c \\mid D) = \\mathcal{N}(\\mu_c(e), \\operatorname{diag}\\sigma^2_c(e)), \\quad
    e = \\frac{1}{M} \\sum_{i=1}^{M} h(x_i).

The *statistic network* is :math:`h` (an MLP per item), the mean over the set's real items
(the mask leaves padding out) and the MLP from :math:`e` to :math:`q(c \\mid D)`: the mean makes
it exchangeable, invariant to the order of the items and to padding. :math:`q(z_i \\mid x_i,
c)` reads the item and the context drawn for its set. The plates are the model's: ``c`` in
``sets`` (dim -2), ``z`` in ``items`` (dim -1), masked. Pairs with models/statistician.py;
:class:`StatisticNetwork` is reusable on its own (an encoder of sets).

References

[1] Edwards, Storkey. Towards a Neural Statistician. ICLR 2017. arXiv:1606.02185
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyrovae.data.sets import as_sets
from pyrovae.guides.base import EncoderGuide
from pyrovae.models.base import broadcast_cat
from pyrovae.models.statistician import MIN_SCALE
from pyrovae.nn import MLP, activation as make_activation, check_positive
from pyrovae.registry import register_guide

__all__ = ["StatisticNetwork", "StatisticianGuide", "masked_mean"]


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``h`` ``(..., M, F)`` over the items where ``mask`` ``(..., M)`` is True
    (padding is left out whatever it holds; a set with no real item gives zeros)."""
    count = mask.sum(-1, keepdim=True).clamp(min=1).to(h.dtype)
    return torch.where(mask[..., None], h, h.new_zeros(())).sum(-2) / count


class StatisticNetwork(nn.Module):
    """q(c | D): item features h(x_i), their mean over the real items, then an MLP to the
    location and scale of a diagonal Normal over c.

    :param int x_dim: one item's size. :param int c_dim: the context's size.
    :param int feature_dim: width of h(x). :param tuple hidden_dims: hidden widths of both MLPs.
    """

    def __init__(self, x_dim: int, c_dim: int, feature_dim: int, hidden_dims, activation: str = "relu"):
        super().__init__()
        self.c_dim = c_dim
        self.items = nn.Sequential(MLP(x_dim, hidden_dims, feature_dim, activation), make_activation(activation))
        self.head = MLP(feature_dim, hidden_dims, 2 * c_dim, activation)

    def statistic(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled features ``e`` ``(S, feature_dim)`` of the sets ``x`` ``(S, M, D)``."""
        return masked_mean(self.items(x), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dist.Distribution:
        """q(c | D), batch shape ``(S,)``, event ``(c_dim,)``."""
        loc, raw_scale = self.head(self.statistic(x, mask)).split(self.c_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)


@register_guide("statistician")
class StatisticianGuide(EncoderGuide):
    """q(c | D) q(z | x, c): the Neural Statistician's statistic and inference networks.

    Options: the shared encoder options (x_dim: one item's size; z_dim; hidden_dims: the
    hidden widths of every MLP; activation; ``site``: the items' latent, ``z``) and

    :param int c_dim: size of the per-set context c, as the model's.
    :param int feature_dim: width of the per-item features that are pooled.

    >>> guide = StatisticianGuide(x_dim=1, c_dim=2, z_dim=3, hidden_dims=(8,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(4, 6, 1))
    >>> trace.nodes["c"]["value"].shape, trace.nodes["z"]["value"].shape
    (torch.Size([4, 1, 2]), torch.Size([4, 6, 3]))
    """

    model_name = "statistician"

    @dataclass
    class Options(EncoderGuide.Options):
        z_dim: int = 16
        hidden_dims: Tuple[int, ...] = (128, 128)
        activation: str = "relu"
        c_dim: int = 3
        feature_dim: int = 128

        def __post_init__(self):
            super().__post_init__()
            check_positive(c_dim=self.c_dim, feature_dim=self.feature_dim)

    def encoder_outputs(self) -> Optional[int]:
        return None  # the networks are built below

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.c_dim = o.c_dim
        self.statistic_net = StatisticNetwork(o.x_dim, o.c_dim, o.feature_dim, o.hidden_dims, o.activation)
        self.inference_net = MLP(o.x_dim + o.c_dim, o.hidden_dims, 2 * o.z_dim, o.activation)

    def context(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> dist.Distribution:
        """q(c | D) of the sets ``x`` ``(S, M, D)`` (``mask``: their real items)."""
        x, mask = as_sets(x, mask)
        return self.statistic_net(x, mask)

    def posterior_z(self, x: torch.Tensor, c: torch.Tensor) -> dist.Distribution:
        """q(z | x, c): items ``(S, M, D)``, contexts ``(..., S, 1, C)``."""
        loc, raw_scale = self.inference_net(broadcast_cat(x, c)).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, sizes: Optional[torch.Tensor] = None):
        x, mask = as_sets(x, mask)
        q_c = self.statistic_net(x, mask)
        with pyro.plate("sets", x.shape[0], dim=-2):
            c = pyro.sample("c", dist.Normal(q_c.base_dist.loc[:, None, :], q_c.base_dist.scale[:, None, :])
                            .to_event(1))  # (S, 1, C)
            with pyro.plate("items", x.shape[1], dim=-1), poutine.mask(mask=mask):
                pyro.sample(self.site, self.posterior_z(x, c))
