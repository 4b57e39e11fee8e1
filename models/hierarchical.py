"""A VAE with several stochastic layers (Burda, Grosse, Salakhutdinov 2016; Sonderby et al. 2016).

The generative process is a chain of Gaussian layers ``z_L -> ... -> z_1 -> x``:

.. math::
    z_L \\sim \\mathcal{N}(0, I), \\qquad
    z_i \\mid z_{i+1} \\sim \\mathcal{N}\\big(\\mu_{p,i}(z_{i+1}),
        \\operatorname{diag} \\sigma^2_{p,i}(z_{i+1})\\big) \\quad (i = L-1, \\dots, 1), \\qquad
    x \\mid z_1 \\sim \\operatorname{Bernoulli}\\big(\\operatorname{sigmoid} g(z_1)\\big),

with MLPs for :math:`(\\mu_{p,i}, \\sigma_{p,i})` (the *top-down* network, ``upper_hidden_dims``,
:math:`\\sigma = \\operatorname{softplus}(\\cdot) + 10^{-4}`) and for :math:`g`
(``hidden_dims``, reversed). The defaults are Burda et al.'s two-layer MNIST architecture:
x(784) - 200 - 200 - z1(100) - 100 - 100 - z2(50), tanh. ``z_dim`` is the top layer's size
(the latent with the standard-normal prior, as in the one-layer ``vae``) and ``lower_z_dims``
the sizes of the layers below it, from the one next to x upwards: ``lower_z_dims=(64, 32, 16, 8)``
with ``z_dim=4`` is the five-layer LVAE's stack; ``()`` is the one-layer VAE.

The latent sites are named ``z1`` (next to x) to ``zL`` (the top), with the prefix ``site``.
Two guides pair with it (guides/hierarchical.py): ``hvae``, Burda et al.'s bottom-up
:math:`q(z_1 \\mid x) \\prod_i q(z_{i+1} \\mid z_i)`, and ``ladder``, the Ladder VAE's
top-down inference, which reads this model's top-down network (:meth:`HierarchicalVAE.conditional`).

References

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016, arXiv:1509.00519
[2] Sonderby, Raiko, Maaloe, Sonderby, Winther. Ladder Variational Autoencoders. NeurIPS 2016,
    arXiv:1602.02282
[3] Rezende, Mohamed, Wierstra. Stochastic Backpropagation and Approximate Inference in Deep
    Generative Models. ICML 2014, arXiv:1401.4082
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.infer.importance import latent_sites
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

MIN_SCALE = 1e-4


def scale_from(raw: torch.Tensor) -> torch.Tensor:
    """A standard deviation from an unconstrained network output: softplus, floored."""
    return F.softplus(raw) + MIN_SCALE


def site_names(prefix: str, num_layers: int) -> List[str]:
    """The latent sites ``[prefix1, ..., prefixL]``, bottom (next to x) to top."""
    return [f"{prefix}{i + 1}" for i in range(num_layers)]


@register_model("hvae")
class HierarchicalVAE(Model):
    """p(z_L) prod_i p(z_i | z_{i+1}) p(x | z_1): Gaussian layers, a Bernoulli likelihood.

    :param int x_dim: size of one (flattened, binary) datapoint.
    :param int z_dim: size of the top layer z_L (prior N(0, I)).
    :param tuple hidden_dims: hidden widths between z_1 and x (the decoder; listed from x, as
        the encoder's, and used reversed).
    :param tuple lower_z_dims: sizes of z_1 .. z_{L-1}, from the layer next to x upwards.
    :param tuple upper_hidden_dims: hidden widths of each block between two latent layers.
    :param str activation: nonlinearity.
    :param str site: prefix of the latent site names (``z1``, ``z2``, ...).

    >>> model = HierarchicalVAE(x_dim=12, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(4,))
    >>> model.z_dims, model.sample(5).shape
    ((3, 2), torch.Size([5, 12]))
    """

    guide_name = "ladder"
    #: the KL weight rises from 0 to 1 over the first 2500 steps (``--kl-warmup``), as Sønderby et
    #: al. train every model of theirs: without it the ladder stays on its early plateau. The
    #: default fit on MNIST (10 epochs, 5000 steps, K = 1000 on 2,000 test images, paired) moves
    #: from -112.25 to -96.13 nats with the ladder (+16.12 ± 0.35; seed 1 +12.16 ± 0.30), -99.49 to
    #: -97.16 with the bottom-up guide (+2.33 ± 0.11), and puts them 4.3 and 3.3 nats ahead of the
    #: one-layer VAE, which the warm-up does not help (-0.55 ± 0.08): docs/hierarchical.md
    default_objective_options = {"warmup_steps": 2500}

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 50
        hidden_dims: Tuple[int, ...] = (200, 200)
        lower_z_dims: Tuple[int, ...] = (100,)
        upper_hidden_dims: Tuple[int, ...] = (100, 100)
        activation: str = "tanh"
        site: str = "z"

        def __post_init__(self):
            self.hidden_dims, self.lower_z_dims = tuple(self.hidden_dims), tuple(self.lower_z_dims)
            self.upper_hidden_dims = tuple(self.upper_hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims,
                           lower_z_dims=self.lower_z_dims, upper_hidden_dims=self.upper_hidden_dims)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim = o.x_dim
        self.z_dims: Tuple[int, ...] = (*o.lower_z_dims, o.z_dim)  # bottom (z_1) to top (z_L)
        self.num_layers = len(self.z_dims)
        self.sites = site_names(o.site, self.num_layers)
        self.decoder = MLP(self.z_dims[0], tuple(reversed(o.hidden_dims)), o.x_dim, o.activation)
        # top_down[i]: z_{i+2} -> (loc, raw scale) of p(z_{i+1} | z_{i+2}) (0-based: layer i given layer i + 1)
        self.top_down = nn.ModuleList(
            MLP(self.z_dims[i + 1], tuple(reversed(o.upper_hidden_dims)), 2 * self.z_dims[i], o.activation)
            for i in range(self.num_layers - 1))

    def conditional(self, i: int, z_above: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of p(z_{i+1} | z_{i+2}) for the 0-based layer ``i`` < L - 1, given the
        layer above's value ``z_above`` (any leading shape). The ladder guide calls this too."""
        loc, raw = self.top_down[i](z_above).split(self.z_dims[i], -1)
        return loc, scale_from(raw)

    def prior_top(self, n: int, like: torch.Tensor) -> dist.Distribution:
        """p(z_L) = N(0, I) for ``n`` datapoints (on ``like``'s device and dtype)."""
        loc = like.new_zeros(n, self.z_dims[-1])
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def likelihood(self, z1: torch.Tensor) -> dist.Distribution:
        """p(x | z_1): Bernoulli, event shape ``(x_dim,)``, batch shape ``z1.shape[:-1]``."""
        return dist.Bernoulli(logits=self.decoder(z1), validate_args=False).to_event(1)

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's output at the logits of the data's mean pixel (``init="burda"``)."""
        bias_at_data_logits_(self.decoder[-1], x)

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model: ``x`` observed (``(N, x_dim)``), or ``num_samples`` fresh draws."""
        n = self.batch_size(x, num_samples)
        like = x if x is not None else self.decoder[0].weight
        with pyro.plate("data", n):
            z = pyro.sample(self.sites[-1], self.prior_top(n, like))
            for i in reversed(range(self.num_layers - 1)):
                loc, scale = self.conditional(i, z)
                z = pyro.sample(self.sites[i], dist.Normal(loc, scale).to_event(1))
            return pyro.sample("x", self.likelihood(z), obs=x)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draws ``x ~ p(x)`` (the likelihood's mean given the drawn z_1 when ``mean``)."""
        trace = poutine.trace(self).get_trace(num_samples=num_samples)
        if not mean:
            return trace.nodes["x"]["value"]
        return self.likelihood(trace.nodes[self.sites[0]]["value"]).mean


@torch.no_grad()
def layer_means(guide, x: torch.Tensor, num_samples: int = 100, sites: Optional[List[str]] = None,
                with_variance: bool = False):
    """``E_q[z_i | x]`` per latent layer, ``{site: (N, z_i)}``: the mean, over ``num_samples``
    draws of the whole guide, of each layer's conditional mean given the draws it depends on
    (exact for a layer that depends on x alone; Rao-Blackwellized, so less noisy than the mean
    of the draws, for the others). With ``with_variance``, also ``{site: (z_i,)}``, the total
    variance of each unit's draws over the datapoints and the guide's draws, ``Var_{x, q}[z_j]``."""
    with pyro.plate("hierarchical_layer_means", num_samples, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    names = sites or [site["name"] for site in latent_sites(trace)]
    means = {name: trace.nodes[name]["fn"].mean.expand(trace.nodes[name]["value"].shape)
             .reshape(num_samples, x.shape[0], -1).mean(0) for name in names}
    if not with_variance:
        return means
    variances = {name: trace.nodes[name]["value"].reshape(-1, means[name].shape[-1]).var(0, unbiased=False)
                 for name in names}
    return means, variances


def active_units_per_layer(guide, x: torch.Tensor, num_samples: int = 100, threshold: float = 0.01,
                           relative: bool = False) -> Dict[str, Tuple[int, int]]:
    """Burda et al.'s active units per layer: ``{site: (active, size)}``, unit ``j`` of a layer
    active when ``Var_x E_q[z_j | x] > threshold`` (0.01), the inner mean over ``num_samples``
    draws of the guide (:func:`layer_means`), the variance over the datapoints ``x``.

    Burda et al.'s threshold is absolute: it assumes a unit's scale is about 1, which the N(0, I)
    top layer fixes but a lower layer's *learned* p(z_i | z_{i+1}) does not (a ladder's z1 can
    live at scale 0.03 and carry information with every unit "inactive"). ``relative=True``
    divides by the unit's total variance over the data and the guide's draws,
    ``Var_x E_q[z_j | x] / Var_{x,q}[z_j] > threshold``: the share of the unit's spread that
    the datapoint explains (the same count for a unit of scale 1, unchanged by rescaling a layer)."""
    if relative:
        means, total = layer_means(guide, x, num_samples, with_variance=True)
    else:
        means, total = layer_means(guide, x, num_samples), None
    out = {}
    for name, m in means.items():
        variance = m.var(0, unbiased=False)
        if relative:
            variance = variance / total[name].clamp_min(1e-30)
        out[name] = (int((variance > threshold).sum()), int(m.shape[-1]))
    return out
