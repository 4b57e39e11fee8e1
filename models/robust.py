"""The robust VAE: a noise variance per datapoint and per dimension, inferred by the encoder.

Dai, Wang, Aston, Hua and Wipf [1] show that a VAE whose decoder covariance
:math:`\\Sigma_x = \\mathrm{diag}(\\gamma)` may differ from datapoint to datapoint (their
:math:`\\gamma(z)`) solves robust PCA: on data :math:`X = L + S`, low rank plus sparse gross
corruptions, the objective is lowest when the decoder's mean reproduces :math:`L` and the
variances of the corrupted entries grow to absorb :math:`S`. Minimizing the Gaussian
negative log-likelihood over a free variance :math:`\\gamma_{nd}` leaves
:math:`\\tfrac12 \\log(r_{nd}^2 + \\dots)`, a log penalty on each residual
:math:`r_{nd}`: a few huge residuals cost little, which is why the corruptions are dismissed.

Here the per-entry variance is a latent variable, inferred by the encoder, with a proper
prior so that :math:`\\log p(x)` is finite:

.. math::
    z_n \\sim \\mathcal{N}(0, I), \\qquad
    \\tau_{nd} \\sim \\mathrm{Gamma}(\\nu/2, \\nu/2), \\qquad
    x_{nd} \\mid z_n, \\tau_{nd} \\sim \\mathcal{N}\\big(f_d(z_n),\\ \\psi_d / \\tau_{nd}\\big),

with :math:`f` linear (``hidden_dims=()``, the paper's affine decoder) or an MLP, and
:math:`\\psi` one variance per dimension. The variance of entry :math:`(n, d)` is
:math:`\\psi_d / \\tau_{nd}`. Integrating :math:`\\tau` out gives a Student-t likelihood,
:math:`x_{nd} \\mid z_n \\sim t_\\nu(f_d(z_n), \\psi_d^{1/2})`, whose negative log is again a
log penalty, :math:`\\tfrac{\\nu + 1}{2} \\log(1 + r^2 / (\\nu \\psi_d))`;
:meth:`RobustVAE.log_likelihood_given_z` uses it, and
:func:`pyrovae.guides.robust.log_likelihood_z_only` importance-samples :math:`z` alone with it.

The guide ``robust-encoder`` (guides/robust.py) gives :math:`q(z \\mid x)` (a diagonal Gaussian from an MLP) and
:math:`q(\\tau_{nd} \\mid x) = \\mathrm{Gamma}(a_d, b_d + \\tfrac12 c_d\\, (x_{nd} -
g_d(\\mu_z(x)))^2)`: the form of the exact conditional posterior of :math:`\\tau` (shape
:math:`(\\nu + 1)/2`, rate :math:`\\nu/2 + r^2 / (2\\psi_d)`), with its own reconstruction
network :math:`g` and learned :math:`a, b, c`. An entry far from the reconstruction gets a
small precision, that is a large variance.

References

[1] Dai, Wang, Aston, Hua, Wipf. Hidden Talents of the Variational Autoencoder. arXiv:1706.05148
    (JMLR 19, 2018: Connections with Robust PCA and the Role of Emergent Sparsity in
    Variational Autoencoder Models)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.nn import MLP, check_positive, output_at_data_mean_
from pyrovae.models.base import Model
from pyrovae.registry import register_model


def inverse_softplus(value: float) -> float:
    """The raw parameter whose softplus is ``value`` (> 0).

    >>> round(float(torch.nn.functional.softplus(torch.tensor(inverse_softplus(0.5)))), 6)
    0.5
    """
    return math.log(math.expm1(value))


class BroadcastGamma(dist.Gamma):
    """``Gamma(concentration, rate)`` of batch shape ``batch_shape``, its parameters of smaller
    shapes broadcast to it (the prior's two numbers; the guide's shape, one per dimension), whose
    log-density computes each term at its parameters' own shape: ``lgamma`` of the concentration
    once per distinct value, not once per entry. The same values as ``dist.Gamma`` of the
    expanded parameters (each entry's terms are the same numbers, added in the same order); the
    draws are ``dist.Gamma``'s.

    >>> g = BroadcastGamma(torch.tensor(0.5), torch.tensor(0.5), (3, 4))
    >>> g.batch_shape, bool(torch.allclose(g.log_prob(torch.ones(3, 4)), dist.Gamma(0.5, 0.5).log_prob(torch.ones(()))))
    (torch.Size([3, 4]), True)
    """

    def __init__(self, concentration: torch.Tensor, rate: torch.Tensor, batch_shape, validate_args=None):
        self.own_concentration, self.own_rate = concentration, rate
        batch_shape = torch.Size(batch_shape)
        super().__init__(concentration.expand(batch_shape), rate.expand(batch_shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return BroadcastGamma(self.own_concentration, self.own_rate, batch_shape, validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c, rate = self.own_concentration, self.own_rate
        return torch.xlogy(c, rate) + torch.xlogy(c - 1, value) - rate * value - torch.lgamma(c)


@register_model("robust")
class RobustVAE(Model):
    """p(z) p(tau) p(x | z, tau): a Gaussian decoder with variance psi_d / tau_nd per entry.

    :param int x_dim: data dimension.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: decoder hidden widths; ``()`` is a linear decoder ``W z + b``.
    :param str activation: decoder nonlinearity.
    :param float df: nu, the degrees of freedom of the Gamma(nu/2, nu/2) prior on tau (small:
        heavy tails, corruptions cheap).
    :param float init_scale: initial sqrt(psi_d).
    :param float min_scale: a floor on sqrt(psi_d).

    >>> model = RobustVAE(x_dim=5, z_dim=2)
    >>> model(num_samples=3).shape
    torch.Size([3, 5])
    """

    guide_name = "robust-encoder"

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 2
        hidden_dims: Tuple[int, ...] = ()
        activation: str = "tanh"
        df: float = 1.0
        init_scale: float = 1.0
        min_scale: float = 1e-3

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer
            for name in ("df", "init_scale"):
                if not getattr(self, name) > 0:
                    raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
            if not 0 <= self.min_scale < self.init_scale:
                raise ValueError(f"min_scale must be >= 0 and below init_scale={self.init_scale}, got {self.min_scale}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.z_dim, self.df = o.x_dim, o.z_dim, float(o.df)
        self.decoder = MLP(o.z_dim, o.hidden_dims, o.x_dim, o.activation)
        self.raw_scale = torch.nn.Parameter(torch.full((o.x_dim,), inverse_softplus(o.init_scale - o.min_scale)))

    @property
    def weight(self) -> torch.Tensor:
        """The linear decoder's ``W`` ``(x_dim, z_dim)`` (``hidden_dims=()`` only)."""
        if self.options.hidden_dims:
            raise AttributeError("weight: the decoder is an MLP (hidden_dims given), not linear")
        return self.decoder[-1].weight

    @property
    def noise_scale(self) -> torch.Tensor:
        """sqrt(psi): the per-dimension scale, ``(x_dim,)``."""
        return F.softplus(self.raw_scale) + self.options.min_scale

    @property
    def default_init(self) -> str:
        """fit's default init: ``burda`` (the location at the data's mean) for the linear decoder,
        measured 13 nats better on the linear robust-PCA case; ``torch`` for an MLP decoder, where
        it cost 10.8 and 12.1 nats on salt-and-pepper MNIST at two seeds (docs/hidden-talents.md)."""
        return "torch" if self.options.hidden_dims else "burda"

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's location at the data's mean per dimension (``init="burda"``, the
        default of ``fit`` for the linear decoder; docs/hidden-talents.md)."""
        output_at_data_mean_(self.decoder[-1], x, "gaussian")

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        n = self.batch_size(x, num_samples)
        half = self.raw_scale.new_tensor(self.df / 2)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(self.raw_scale.new_zeros(n, self.z_dim), 1.0).to_event(1))
            tau = pyro.sample("tau", BroadcastGamma(half, half, (n, self.x_dim)).to_event(1))
            scale = self.noise_scale * tau.clamp_min(1e-30).rsqrt()
            return pyro.sample("x", dist.Normal(self.decoder(z), scale).to_event(1), obs=x)

    def log_likelihood_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` with tau integrated out (Student-t per entry), summed over dimensions."""
        return dist.StudentT(self.df, self.decoder(z), self.noise_scale).log_prob(x).sum(-1)
