"""The Variational Homoencoder's guide (Hewitt et al. 2018): the statistician's
:math:`q(c \\mid D) \\prod_i q(z_i \\mid x_i, c)` with :math:`D` a small random subset of the
set in training.

In training each set draws a subset size :math:`k` uniformly in ``[min_subset,
min(max_subset, n)]`` (``n`` its real elements) and :math:`k` of its real elements at random;
:math:`q(c \\mid D)` is the statistic network (guides/statistician.py) over those alone, and
every element of the set (all ``n``) is then decoded from that ``c`` (the model scores them; the
guide's :math:`q(z_i \\mid x_i, c)` reads each). One subset per set and step, shared by its
elements (the paper's bound draws :math:`D \\subset X` per element; one draw per set is an
unbiased estimate of the same expectation, with more variance). The ``c`` site is scaled as the
model's, :math:`n / |X|` (``class_size``), so the KL of the bound carries the paper's weight.
Out of training the subset is the whole set given: importance sampling of :math:`\\log p(X)`
uses :math:`q(c \\mid X)`; for few-shot generation pass the few elements as the set
(:meth:`HomoencoderGuide.context`).

References

[1] Hewitt, Nye, Gane, Jaakkola, Tenenbaum. The Variational Homoencoder. UAI 2018, arXiv:1807.08919
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyrovae.data.sets import as_sets
from pyrovae.guides.statistician import StatisticianGuide
from pyrovae.models.homoencoder import kl_scale
from pyrovae.registry import register_guide

__all__ = ["HomoencoderGuide", "random_subset"]


def random_subset(mask: torch.Tensor, min_size: int, max_size: int, generator=None) -> torch.Tensor:
    """A mask ``(S, M)`` of a random subset of each set's real items (``mask``): ``k`` of them,
    ``k`` uniform in ``[min_size, min(max_size, n)]`` (at least one, at most ``n``)."""
    n = mask.sum(-1)
    hi = torch.minimum(n, torch.as_tensor(max_size, device=mask.device))
    lo = torch.minimum(torch.as_tensor(min_size, device=mask.device), hi)
    u = torch.rand(n.shape, device=mask.device, generator=generator)
    k = (lo + (u * (hi - lo + 1).to(u.dtype)).floor().long()).clamp(min=1)
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, 2.0)
    rank = scores.argsort(-1).argsort(-1)
    return rank < k[:, None]


@register_guide("homoencoder")
class HomoencoderGuide(StatisticianGuide):
    """q(c | D) q(z | x, c), D a random subset of 1-5 elements in training (Hewitt et al. 2018).

    Options: the statistician guide's and

    :param int min_subset: the smallest subset D drawn in training.
    :param int max_subset: the largest subset D drawn in training.
    :param int class_size: |X|, as the model's (give both the same value; the CLI's
        ``--class-size`` does).

    >>> guide = HomoencoderGuide(x_dim=1, c_dim=2, z_dim=3, hidden_dims=(8,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(4, 6, 1))
    >>> trace.nodes["c"]["value"].shape, trace.nodes["c"]["scale"].flatten().tolist()
    (torch.Size([4, 1, 2]), [1.0, 1.0, 1.0, 1.0])
    """

    model_name = "homoencoder"

    @dataclass
    class Options(StatisticianGuide.Options):
        min_subset: int = 1
        max_subset: int = 5
        class_size: Optional[int] = None

        def __post_init__(self):
            super().__post_init__()
            if type(self.min_subset) is not int or self.min_subset < 1 or type(self.max_subset) is not int \
                    or self.max_subset < self.min_subset:
                raise ValueError(f"min_subset and max_subset must be integers with 1 <= min_subset <= max_subset, "
                                 f"got {self.min_subset!r} and {self.max_subset!r}")
            if self.class_size is not None and (type(self.class_size) is not int or self.class_size < 1):
                raise ValueError(f"class_size must be a positive integer (|X|), got {self.class_size!r}")

    def encoded(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask of the elements q(c | D) reads: a random subset in training, else ``mask``."""
        if not self.training:
            return mask
        return random_subset(mask, self.options.min_subset, self.options.max_subset)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, sizes: Optional[torch.Tensor] = None,
                class_size: Optional[torch.Tensor] = None):
        x, mask = as_sets(x, mask)
        q_c = self.statistic_net(x, self.encoded(mask))
        if self.training:
            scale = kl_scale(mask, class_size if class_size is not None else self.options.class_size)[:, None]
        else:
            scale = torch.ones(x.shape[0], 1, device=x.device)
        with pyro.plate("sets", x.shape[0], dim=-2):
            with poutine.scale(scale=scale):
                c = pyro.sample("c", dist.Normal(q_c.base_dist.loc[:, None, :], q_c.base_dist.scale[:, None, :])
                                .to_event(1))  # (S, 1, C)
            with pyro.plate("items", x.shape[1], dim=-1), poutine.mask(mask=mask):
                pyro.sample(self.site, self.posterior_z(x, c))
