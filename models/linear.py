"""The linear-Gaussian VAE: the one nonlinear-free model with everything in closed form.

.. math::
    z_n \\sim \\mathcal{N}(0, I), \\qquad x_n \\mid z_n \\sim \\mathcal{N}(W z_n + b, \\sigma^2 I),
    \\qquad p(x_n) = \\mathcal{N}(x_n;\\ b,\\ W W^\\top + \\sigma^2 I).

The posterior is Gaussian, ``q*(z | x) = N(mu, S)`` with ``S = (I + W^T W / sigma^2)^{-1}`` and
``mu = S W^T (x - b) / sigma^2``, so the exact log-likelihood and posterior check every
estimator in the suite. Its maximum-likelihood solution is probabilistic PCA (Tipping &
Bishop), which is why a VAE with this decoder recovers the principal subspace (Dai et al.,
"Hidden Talents of the Variational Autoencoder").

With ``noise="diagonal"`` the decoder learns one noise variance per dimension,
:math:`x_n \\mid z_n \\sim \\mathcal{N}(W z_n + b, \\mathrm{diag}(\\psi))` and
:math:`p(x_n) = \\mathcal{N}(b, W W^\\top + \\mathrm{diag}(\\psi))`: factor analysis, whose
maximum-likelihood solution has no closed form; the posterior is
``S = (I + W^T diag(psi)^{-1} W)^{-1}``, ``mu = S W^T diag(psi)^{-1} (x - b)``.

References

[1] Tipping, Bishop. Probabilistic Principal Component Analysis. JRSS B 61(3), 1999
[2] Dai, Wang, Aston, Hua, Wipf. Hidden Talents of the Variational Autoencoder. arXiv:1706.05148
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.nn import check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

Noise = Literal["isotropic", "diagonal"]
NOISES = typing.get_args(Noise)


@register_model("linear")
class LinearGaussianVAE(Model):
    """p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I) with learned W, b and sigma.

    :param int x_dim: data dimension.
    :param int z_dim: latent dimension.
    :param float init_scale: initial sigma.
    :param str noise: ``isotropic`` (one sigma, probabilistic PCA) or ``diagonal`` (one sigma
        per dimension, factor analysis).

    >>> model = LinearGaussianVAE(x_dim=3, z_dim=2)
    >>> x = torch.randn(5, 3)
    >>> model.log_marginal(x).shape
    torch.Size([5])
    """

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 2
        init_scale: float = 1.0
        noise: Noise = "isotropic"

        def __post_init__(self):
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim)
            if self.init_scale <= 0:
                raise ValueError(f"init_scale must be positive, got {self.init_scale}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        x_dim, z_dim, init_scale = self.options.x_dim, self.options.z_dim, self.options.init_scale
        self.x_dim, self.z_dim = x_dim, z_dim
        self.weight = torch.nn.Parameter(torch.randn(x_dim, z_dim) / z_dim ** 0.5)
        self.bias = torch.nn.Parameter(torch.zeros(x_dim))
        # softplus(raw) = init_scale
        raw = torch.tensor(float(init_scale)).expm1().log()
        if self.options.noise == "diagonal":
            raw = raw.expand(x_dim).clone()
        self.raw_scale = torch.nn.Parameter(raw)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start ``b`` at the data's mean, its maximum-likelihood value (``init="burda"``, the
        default of ``fit``: Glorot's layers for the guide; docs/hidden-talents.md)."""
        self.bias.copy_(x.detach().mean(0).to(self.bias))

    @property
    def noise_scale(self) -> torch.Tensor:
        """sigma: a scalar (``isotropic``) or one per dimension, ``(x_dim,)`` (``diagonal``)."""
        return F.softplus(self.raw_scale)

    def noise_variance(self, dtype=None, device=None) -> torch.Tensor:
        """The decoder's noise variance per dimension, ``(x_dim,)``."""
        s2 = self.noise_scale ** 2
        return s2.expand(self.x_dim).to(dtype=dtype, device=device)

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        n = self.batch_size(x, num_samples)
        loc0 = self.bias.new_zeros(n, self.z_dim)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(loc0, 1.0).to_event(1))
            loc = z @ self.weight.T + self.bias
            return pyro.sample("x", dist.Normal(loc, self.noise_scale.expand(loc.shape)).to_event(1), obs=x)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per row."""
        cov = self.weight @ self.weight.T + torch.diag(self.noise_variance(x.dtype, x.device))
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov).log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact posterior p(z | x), batch shape ``x.shape[:-1]``."""
        scaled = self.weight / self.noise_variance(x.dtype, x.device)[:, None]  # diag(psi)^{-1} W
        precision = torch.eye(self.z_dim, dtype=x.dtype, device=x.device) + self.weight.T @ scaled
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ scaled @ cov  # cov is symmetric
        return dist.MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[:-1] + cov.shape))
