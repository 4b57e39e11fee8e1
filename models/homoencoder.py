"""The Variational Homoencoder (Hewitt, Nye, Gane, Jaakkola, Tenenbaum 2018): learn a model of
sets from a *small subset* of each set.

The generative model is the Neural Statistician's (models/statistician.py): a context
:math:`c` per set :math:`X`, a latent :math:`z_i` per element,

.. math:: c \\sim \\mathcal{N}(0, I), \\qquad z_i \\mid c \\sim p(z \\mid c), \\qquad
          x_i \\mid z_i, c \\sim p(x \\mid z_i, c).

What changes is how it is trained. The statistician encodes the whole set it decodes,
:math:`q(c \\mid X)`; the homoencoder encodes a small random subset :math:`D \\subset X` (1-5
elements) and decodes every element of :math:`X` from it, with the KL of :math:`c` shared out
over the set: the paper's bound (Hewitt et al., eq. 4) is

.. math:: \\log p(X) \\ \\ge\\ \\sum_{x \\in X} \\mathbb{E}_{D \\subset X}\\Big[
          \\mathbb{E}_{q(c \\mid D)} \\big[\\log p(x \\mid c)\\big]
          - \\tfrac{1}{|X|}\\, \\mathrm{KL}\\big(q(c \\mid D) \\,\\|\\, p(c)\\big)\\Big],

with :math:`\\log p(x \\mid c)` itself bounded by the per-element ELBO over :math:`z` (the
statistician's). A batch row is a set of :math:`n` real elements (the mask) drawn from a set
:math:`X` of :math:`|X|` elements (the batch key ``class_size``, else the model option
``class_size``, else the row itself, :math:`|X| = n`); each of its :math:`n` elements carries
:math:`1/|X|` of the KL, so the ``c`` site is scaled (``poutine.scale``, in the model and the
guide alike) by

.. math:: s = n / |X| \\qquad \\text{(training only)}.

With :math:`|X| = n` (decode the whole set) the scale is one and the bound is a proper ELBO of
:math:`\\log p(X)` whose proposal :math:`q(c \\mid D)` has seen only the subset; with :math:`|X|
> n` (decode a few elements of a large class) the KL of ``c`` costs each element only
:math:`1/|X|` nats, which is what lets a high-capacity decoder use ``c``. Out of training (``eval()``:
``log_likelihood``, ``evaluate``) the scale is one and the guide encodes the whole set it is
given, so importance sampling estimates the same :math:`\\log p(X)` as the statistician's.

References

[1] Hewitt, Nye, Gane, Jaakkola, Tenenbaum. The Variational Homoencoder: Learning to learn high
    capacity generative models from few examples. UAI 2018, arXiv:1807.08919
[2] Edwards, Storkey. Towards a Neural Statistician. ICLR 2017. arXiv:1606.02185
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import torch
from pyro import poutine

from pyrovae.data.sets import as_sets
from pyrovae.models.statistician import NeuralStatistician
from pyrovae.registry import register_model

__all__ = ["VariationalHomoencoder", "kl_scale"]


def kl_scale(mask: torch.Tensor, class_size=None) -> torch.Tensor:
    """The homoencoder's weight of the KL of ``c`` per set, :math:`s = n / |X|`: ``n`` the real
    elements of each row (``mask`` ``(S, M)``), ``|X|`` the size of the set they are drawn from
    (``class_size``: a number, a ``(S,)`` tensor, or None for ``n`` itself). Shape ``(S,)``."""
    n = mask.sum(-1).to(torch.get_default_dtype())
    if class_size is None:
        return torch.ones_like(n)
    size = torch.as_tensor(class_size, dtype=n.dtype, device=n.device).expand_as(n)
    if bool((size < n).any()):
        raise ValueError(f"class_size (|X|) must be at least the elements of each set; got {size.min().item():g} "
                         f"for a set of {int(n.max())}: pass the size of the whole set the rows are drawn from")
    return n / size


@register_model("homoencoder")
class VariationalHomoencoder(NeuralStatistician):
    """p(c) p(z | c) p(x | z, c), trained from subsets (Hewitt et al. 2018): the KL of c per set
    scaled by n / |X| in training (see the module docstring).

    Options: the statistician's (x_dim, c_dim, z_dim, hidden_dims, likelihood, activation) and

    :param int class_size: |X|, the size of the set each batch row is drawn from, where the
        batch does not carry it (``class_size`` key); None: the row itself.

    >>> model = VariationalHomoencoder(x_dim=4, c_dim=2, z_dim=2, hidden_dims=(8,))
    >>> kl_scale(torch.ones(2, 5, dtype=torch.bool), 20).tolist()
    [0.25, 0.25]
    """

    guide_name = "homoencoder"

    @dataclass
    class Options(NeuralStatistician.Options):
        class_size: Optional[int] = None

        def __post_init__(self):
            super().__post_init__()
            if self.class_size is not None and (type(self.class_size) is not int or self.class_size < 1):
                raise ValueError(f"class_size must be a positive integer (|X|), got {self.class_size!r}")

    def c_scale(self, mask: torch.Tensor, class_size=None) -> torch.Tensor:
        """``(S, 1)``: the scale of the ``c`` site, n / |X| in training, 1 otherwise."""
        if not self.training:
            return torch.ones(mask.shape[0], 1, device=mask.device)
        size = class_size if class_size is not None else self.options.class_size
        return kl_scale(mask, size)[:, None]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, sizes: Optional[torch.Tensor] = None,
                class_size: Optional[torch.Tensor] = None):
        x, mask = as_sets(x, mask)
        num_sets, num_items = x.shape[:2]
        with pyro.plate("sets", num_sets, dim=-2):
            with poutine.scale(scale=self.c_scale(mask, class_size)):
                c = pyro.sample("c", self.prior_c(x))  # (S, 1, C)
            with pyro.plate("items", num_items, dim=-1), poutine.mask(mask=mask):
                z = pyro.sample("z", self.prior_z(c))
                pyro.sample("x", self.observation(z, c, x), obs=x)
