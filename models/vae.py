"""The variational autoencoder's generative model (Kingma & Welling).

.. math::
    z_n \\sim \\mathcal{N}(0, I_{z\\_dim}), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n) \\quad (n = 1..N),

with an MLP decoder and a choice of likelihood: ``bernoulli`` for binary data, ``gaussian``
(learned per-pixel scale, or a fixed ``scale``) and ``continuous_bernoulli`` (Loaiza-Ganem &
Cunningham) for grey levels in [0, 1].

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
[2] Rezende, Mohamed, Wierstra. Stochastic Backpropagation and Approximate Inference in
    Deep Generative Models. arXiv:1401.4082
[3] Loaiza-Ganem, Cunningham. The continuous Bernoulli. arXiv:1907.06845
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule

from pyrovae.nn import MLP, check_positive, output_at_data_mean_
from pyrovae.registry import Configurable, register_model

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")


@register_model("vae")
class VAE(Configurable, PyroModule):
    """p(z) p(x | z) with an MLP decoder.

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: decoder hidden widths (from z to x).
    :param str likelihood: ``bernoulli``, ``gaussian`` or ``continuous_bernoulli``.
    :param float scale: fixed Gaussian scale; None learns one per dimension.
    :param str activation: decoder nonlinearity.

    >>> model = VAE(x_dim=64, z_dim=2)
    >>> model.sample(5).shape
    torch.Size([5, 64])
    """

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        hidden_dims: Tuple[int, ...] = (200, 200)
        likelihood: str = "bernoulli"
        scale: Optional[float] = None
        activation: str = "tanh"

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer
            if self.likelihood not in LIKELIHOODS:
                raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
            if self.scale is not None and self.scale <= 0:
                raise ValueError(f"scale must be positive (or None to learn it), got {self.scale}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        x_dim, z_dim, likelihood, scale = o.x_dim, o.z_dim, o.likelihood, o.scale
        self.x_dim, self.z_dim, self.likelihood_name = x_dim, z_dim, likelihood
        self.decoder = MLP(z_dim, o.hidden_dims, x_dim, o.activation)
        self.fixed_scale = scale
        if likelihood == "gaussian" and scale is None:
            self.raw_scale = torch.nn.Parameter(torch.zeros(x_dim))
        self.register_buffer("prior_loc", torch.zeros(z_dim))

    def prior(self, num_samples: int) -> dist.Distribution:
        """p(z) for a batch of ``num_samples`` datapoints (event shape ``(z_dim,)``)."""
        loc = self.prior_loc.expand(num_samples, self.z_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z): event shape ``(x_dim,)``, batch shape ``z.shape[:-1]``."""
        out = self.decoder(z)
        if self.likelihood_name == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        if self.likelihood_name == "continuous_bernoulli":
            return dist.ContinuousBernoulli(logits=out).to_event(1)
        if self.fixed_scale is not None:
            scale = torch.full_like(out, self.fixed_scale)
        else:
            scale = F.softplus(self.raw_scale) + 1e-3
        return dist.Normal(out, scale).to_event(1)

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's output at the data's mean: the Bernoulli (or continuous
        Bernoulli) logits of the mean pixel, or the Gaussian mean (``init="burda"``)."""
        output_at_data_mean_(self.decoder[-1], x, self.likelihood_name)

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model: ``x`` observed (shape ``(N, x_dim)``), or ``num_samples`` fresh draws."""
        n = x.shape[0] if x is not None else num_samples
        if n is None:
            raise ValueError("pass data x or num_samples")
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            return pyro.sample("x", self.likelihood(z), obs=x)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draws ``x ~ p(x)`` (the likelihood's mean given z ~ p(z) when ``mean``)."""
        z = self.prior(num_samples).sample()
        px = self.likelihood(z)
        return px.mean if mean else px.sample()
