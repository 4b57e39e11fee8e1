"""Guides of the hierarchical VAE (models/hierarchical.py): bottom-up (Burda et al.) and the
Ladder VAE's top-down inference (Sonderby et al.).

**Bottom-up** (``hvae``; Burda, Grosse, Salakhutdinov 2016):

.. math:: q(z_1, \\dots, z_L \\mid x) = q(z_1 \\mid x) \\prod_{i=1}^{L-1} q(z_{i+1} \\mid z_i),

each factor a diagonal Gaussian from an MLP (``hidden_dims`` from x, ``upper_hidden_dims``
between layers).

**Ladder** (``ladder``; Sonderby, Raiko, Maaloe, Sonderby, Winther 2016): a deterministic
bottom-up pass :math:`d_1 = f_1(x),\\ d_{i+1} = f_{i+1}(d_i)` gives a Gaussian estimate
:math:`(\\hat\\mu_i, \\hat\\sigma_i)` per layer (linear heads on :math:`d_i`, softplus scale);
the top-down pass samples :math:`z_L \\sim \\mathcal N(\\hat\\mu_L, \\hat\\sigma^2_L)` and then,
for :math:`i = L-1, \\dots, 1`, merges the estimate with the *generative*
:math:`p(z_i \\mid z_{i+1}) = \\mathcal N(\\mu_{p,i}, \\sigma^2_{p,i})` by precision weighting
(:func:`precision_weighted`):

.. math:: \\sigma^2_{q,i} = \\frac{1}{\\hat\\sigma_i^{-2} + \\sigma_{p,i}^{-2}}, \\qquad
          \\mu_{q,i} = \\big(\\hat\\mu_i \\hat\\sigma_i^{-2} + \\mu_{p,i} \\sigma_{p,i}^{-2}\\big)\\, \\sigma^2_{q,i},

i.e. :math:`q(z_i \\mid z_{i+1}, x) \\propto \\mathcal N(z_i; \\hat\\mu_i, \\hat\\sigma^2_i)\\,
p(z_i \\mid z_{i+1})`. The guide and the model share the top-down parameters
:math:`(\\mu_{p,i}, \\sigma_{p,i})`: the guide calls the model's
:meth:`~pyrovae.models.hierarchical.HierarchicalVAE.conditional`.

**How the ladder guide reads the model.** As Pyro's autoguides do (``AutoGuide`` keeps
``self._model = (model,)``), the guide holds its model in a tuple, so the model is *not* a
submodule: its parameters are registered once, by the model (``guide.parameters()`` and
``guide.state_dict()`` hold only the bottom-up network), the optimizer sees each once, and a
run folder saves each once. The pair is joined by :meth:`LadderGuide.bind_model`:
``LadderGuide.for_model(model)`` or ``LadderGuide(..., model=model)`` in Python; the
registry's :func:`~pyrovae.registry.pair_guide` does it wherever the suite builds a pair by
name (``pyrovae fit``, :func:`~pyrovae.load_run`), so ``evaluate``, ``diagnose``, ``sample``
and resume work. An unbound ladder guide refuses to run, in one line that says so.

Batch normalization (used by Sonderby et al.) is not used: the networks are plain MLPs.

References

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016, arXiv:1509.00519
[2] Sonderby, Raiko, Maaloe, Sonderby, Winther. Ladder Variational Autoencoders. NeurIPS 2016,
    arXiv:1602.02282
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.errors import UsageError
from pyrovae.guides.base import EncoderGuide
from pyrovae.models.hierarchical import HierarchicalVAE, scale_from, site_names
from pyrovae.nn import MLP, activation, check_positive
from pyrovae.registry import register_guide


def precision_weighted(loc1: torch.Tensor, scale1: torch.Tensor, loc2: torch.Tensor, scale2: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of two Gaussian densities, ``N(loc1, scale1^2) N(loc2, scale2^2)``:
    ``(loc, scale)`` with ``scale^2 = 1 / (scale1^-2 + scale2^-2)`` and
    ``loc = (loc1 scale1^-2 + loc2 scale2^-2) scale^2`` (elementwise, broadcasting).

    >>> loc, scale = precision_weighted(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0))
    >>> float(loc), round(float(scale) ** 2, 6)
    (1.0, 0.5)
    """
    precision1, precision2 = scale1.pow(-2), scale2.pow(-2)
    variance = 1.0 / (precision1 + precision2)
    return (loc1 * precision1 + loc2 * precision2) * variance, variance.sqrt()


@dataclass
class HierarchicalGuideOptions(EncoderGuide.Options):
    """The shared encoder options, ``z_dim`` the top layer's size, and the model's layer sizes.

    :param tuple lower_z_dims: sizes of the latent layers below the top, z_1 first.
    :param tuple upper_hidden_dims: hidden widths of each network z_i -> z_{i+1}.
    """

    z_dim: int = 50
    lower_z_dims: Tuple[int, ...] = (100,)
    upper_hidden_dims: Tuple[int, ...] = (100, 100)

    def __post_init__(self):
        super().__post_init__()
        self.lower_z_dims, self.upper_hidden_dims = tuple(self.lower_z_dims), tuple(self.upper_hidden_dims)
        check_positive(lower_z_dims=self.lower_z_dims, upper_hidden_dims=self.upper_hidden_dims)


@register_guide("hvae")
class BottomUpGuide(EncoderGuide):
    """q(z_1 | x) prod_i q(z_{i+1} | z_i): Burda et al.'s bottom-up inference network.

    Options: :class:`~pyrovae.guides.base.EncoderGuide`'s (x_dim, z_dim: the top layer,
    hidden_dims: x -> z_1, activation, site: the prefix of ``z1``, ``z2``, ...), and the
    model's ``lower_z_dims`` and ``upper_hidden_dims`` (z_i -> z_{i+1}).

    >>> guide = BottomUpGuide(x_dim=12, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(4,))
    >>> trace = pyro.poutine.trace(guide).get_trace(torch.zeros(5, 12))
    >>> trace.nodes["z1"]["value"].shape, trace.nodes["z2"]["value"].shape
    (torch.Size([5, 3]), torch.Size([5, 2]))
    """

    model_name = "hvae"
    Options = HierarchicalGuideOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # self.encoder: x -> q(z_1 | x)
        o = self.options
        self.z_dims = (*o.lower_z_dims, o.z_dim)
        self.sites = site_names(o.site, len(self.z_dims))
        self.up = nn.ModuleList(MLP(self.z_dims[i], o.upper_hidden_dims, 2 * self.z_dims[i + 1], o.activation)
                                for i in range(len(self.z_dims) - 1))

    def encoder_outputs(self) -> int:
        return 2 * (self.options.lower_z_dims + (self.options.z_dim,))[0]

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z_1 | x) (batch shape ``x.shape[:-1]``)."""
        loc, raw = self.encoder(x).split(self.z_dims[0], -1)
        return dist.Normal(loc, scale_from(raw)).to_event(1)

    def forward(self, x: torch.Tensor, **kwargs):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(self.sites[0], self.encode(x))
            for i, net in enumerate(self.up):
                loc, raw = net(z).split(self.z_dims[i + 1], -1)
                z = pyro.sample(self.sites[i + 1], dist.Normal(loc, scale_from(raw)).to_event(1))
        return z


def _block(in_dim: int, hidden_dims: Tuple[int, ...], act: str) -> Tuple[nn.Module, int]:
    """Linear + activation layers ``in_dim -> hidden_dims`` (no output layer), and the output width."""
    layers, width = [], in_dim
    for h in hidden_dims:
        layers += [nn.Linear(width, h), activation(act)]
        width = h
    return (nn.Sequential(*layers) if layers else nn.Identity()), width


@register_guide("ladder")
class LadderGuide(EncoderGuide):
    """The Ladder VAE's inference: a deterministic bottom-up pass, then a top-down pass that
    merges each layer's bottom-up Gaussian with the model's p(z_i | z_{i+1}) by precision
    weighting (:func:`precision_weighted`). The top-down parameters are the model's.

    Options: those of :class:`BottomUpGuide`. ``model``: the
    :class:`~pyrovae.models.hierarchical.HierarchicalVAE` to read (or :meth:`bind_model` later).

    >>> model = HierarchicalVAE(x_dim=12, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(4,))
    >>> guide = LadderGuide.for_model(model)
    >>> guide.model is model, any(p is q for p in guide.parameters() for q in model.parameters())
    (True, False)
    """

    model_name = "hvae"
    Options = HierarchicalGuideOptions

    def __init__(self, *args, model: Optional[HierarchicalVAE] = None, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.z_dims = (*o.lower_z_dims, o.z_dim)
        self.sites = site_names(o.site, len(self.z_dims))
        blocks, heads, width = [], [], o.x_dim
        for i, z in enumerate(self.z_dims):
            block, width = _block(width, o.hidden_dims if i == 0 else o.upper_hidden_dims, o.activation)
            blocks.append(block)
            heads.append(nn.Linear(width, 2 * z))
        self.bottom_up, self.heads = nn.ModuleList(blocks), nn.ModuleList(heads)
        self._model: Tuple[Optional[HierarchicalVAE]] = (None,)  # a tuple: not a submodule (as pyro's AutoGuide)
        if model is not None:
            self.bind_model(model)

    def encoder_outputs(self) -> None:
        return None  # the bottom-up pass is built here instead

    @classmethod
    def for_model(cls, model: HierarchicalVAE) -> "LadderGuide":
        """A ladder guide of ``model``'s sizes, bound to it."""
        o = model.options
        return cls(x_dim=o.x_dim, z_dim=o.z_dim, hidden_dims=o.hidden_dims, activation=o.activation, site=o.site,
                   lower_z_dims=o.lower_z_dims, upper_hidden_dims=o.upper_hidden_dims, model=model)

    def bind_model(self, model) -> None:
        """Read ``model``'s top-down network from now on (the model is not made a submodule)."""
        if not isinstance(model, HierarchicalVAE):
            raise UsageError(f"guide 'ladder' reads the top-down network of model 'hvae', not of "
                             f"{type(model).__name__}; use --model hvae")
        if model.z_dims != self.z_dims or model.x_dim != self.x_dim or model.sites != self.sites:
            raise UsageError(f"guide 'ladder' has layers {self.z_dims} over x_dim {self.x_dim} (sites {self.sites}) "
                             f"but the model has {model.z_dims} over {model.x_dim} (sites {model.sites}); "
                             "build both with the same z_dim, lower_z_dims and site")
        self._model = (model,)

    @property
    def model(self) -> HierarchicalVAE:
        model = self._model[0]
        if model is None:
            raise UsageError("the ladder guide reads the model's top-down network but has no model: build it with "
                             "LadderGuide.for_model(model) or LadderGuide(..., model=model), or call "
                             "guide.bind_model(model)")
        return model

    def bottom_up_pass(self, x: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The deterministic pass: ``[(mu_hat_i, sigma_hat_i)]`` for i = 1..L (bottom to top)."""
        out, d = [], x
        for block, head, z in zip(self.bottom_up, self.heads, self.z_dims):
            d = block(d)
            loc, raw = head(d).split(z, -1)
            out.append((loc, scale_from(raw)))
        return out

    def forward(self, x: torch.Tensor, **kwargs):
        model = self.model
        estimates = self.bottom_up_pass(x)
        with pyro.plate("data", x.shape[0]):
            loc, scale = estimates[-1]  # the top: the bottom-up estimate alone (Sonderby et al.)
            z = pyro.sample(self.sites[-1], dist.Normal(loc, scale).to_event(1))
            for i in reversed(range(len(self.z_dims) - 1)):
                loc_p, scale_p = model.conditional(i, z)
                loc, scale = precision_weighted(*estimates[i], loc_p, scale_p)
                z = pyro.sample(self.sites[i], dist.Normal(loc, scale).to_event(1))
        return z
