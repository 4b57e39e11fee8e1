"""The variational autoencoder's generative model (Kingma & Welling).

.. math::
    z_n \\sim \\mathcal{N}(0, I_{z\\_dim}), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n) \\quad (n = 1..N),

with an MLP decoder and a choice of likelihood: ``bernoulli`` for binary data, ``gaussian``
(learned per-pixel scale, or a fixed ``scale``) and ``continuous_bernoulli`` (Loaiza-Ganem &
Cunningham) for grey levels in [0, 1], and ``logistic-mixture``, the discretized logistic
(mixture of ``num_mixtures``) of PixelCNN++ over the ``num_bins`` grey levels of 8-bit images:
a probability of each image, so log p(x) is in nats over the discrete levels (bits per
dimension: ``-log p(x) / (D ln 2)``), the default for a user's 8-bit images (docs/data.md).

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
[2] Rezende, Mohamed, Wierstra. Stochastic Backpropagation and Approximate Inference in
    Deep Generative Models. arXiv:1401.4082
[3] Loaiza-Ganem, Cunningham. The continuous Bernoulli. arXiv:1907.06845
[4] Salimans, Karpathy, Chen, Kingma. PixelCNN++. ICLR 2017, arXiv:1701.05517
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.models.conv import mixture_likelihood, observed_value
from pyrovae.nn import MLP, check_positive, output_at_data_mean_
from pyrovae.models.base import Model, StandardNormalPrior
from pyrovae.registry import register_model

Likelihood = Literal["bernoulli", "gaussian", "continuous_bernoulli", "logistic-mixture"]
LIKELIHOODS = typing.get_args(Likelihood)


@register_model("vae")
class VAE(StandardNormalPrior, Model):
    """p(z) p(x | z) with an MLP decoder.

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: decoder hidden widths (from z to x).
    :param str likelihood: ``bernoulli``, ``gaussian``, ``continuous_bernoulli`` or
        ``logistic-mixture`` (8-bit grey levels).
    :param float scale: fixed Gaussian scale; None learns one per dimension.
    :param str activation: decoder nonlinearity.
    :param int num_mixtures: ``logistic-mixture``: logistic components per pixel.
    :param int num_bins: ``logistic-mixture``: grey levels (256: 8 bits).

    >>> model = VAE(x_dim=64, z_dim=2)
    >>> model.sample(5).shape
    torch.Size([5, 64])
    """

    likelihoods = LIKELIHOODS

    #: a new run with the diagonal Normal guide takes the KL in closed form (``meanfield``)
    #: unless an objective is named: measured 0.37 ± 0.01 nats better than the sampled KL of
    #: ``elbo`` on binarized MNIST over two seeds (docs/vae.md, "sampled or closed-form KL");
    #: other guides keep ``elbo`` (:func:`pyrovae.guides.base.objective_for`)
    default_objective = "meanfield"

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        hidden_dims: Tuple[int, ...] = (200, 200)
        likelihood: Likelihood = "bernoulli"
        scale: Optional[float] = None
        activation: str = "tanh"
        num_mixtures: int = 1
        num_bins: int = 256

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer
            if self.scale is not None and self.scale <= 0:
                raise ValueError(f"scale must be positive (or None to learn it), got {self.scale}")
            check_positive(num_mixtures=self.num_mixtures)
            if self.num_bins < 2:
                raise ValueError(f"num_bins must be at least 2, got {self.num_bins}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        x_dim, z_dim, likelihood, scale = o.x_dim, o.z_dim, o.likelihood, o.scale
        self.x_dim, self.z_dim, self.likelihood_name = x_dim, z_dim, likelihood
        outputs = x_dim * (3 * o.num_mixtures if likelihood == "logistic-mixture" else 1)
        self.decoder = MLP(z_dim, o.hidden_dims, outputs, o.activation)
        self.fixed_scale = scale
        if likelihood == "gaussian" and scale is None:
            self.raw_scale = torch.nn.Parameter(torch.zeros(x_dim))
        self.standard_normal_prior_(z_dim)

    @property
    def default_init(self) -> str:
        """fit's and the CLI's default init (:func:`pyrovae.nn.default_init`): ``torch`` for a
        ``gaussian`` likelihood, ``burda`` (Glorot's layers, the output at the data's mean) for
        the others. Measured on clean grey-level MNIST (``--binarize none``; 10 epochs on 10,000
        images, K = 1000 on 500 test images, seeds 0 / 1; benchmarks/init_defaults.py,
        docs/vae.md#initialisation), burda - torch, paired: ``gaussian`` with its learned scale
        per pixel -7.8 ± 0.4 / -4.8 ± 0.4 nats (30 epochs on 50,000 images: -21.3 ± 2.5 /
        +1.1 ± 2.0), with ``scale=0.1`` -16 ± 3 / -32 ± 3, ``svae``'s -11.8 ± 0.4 / -8.6 ± 0.4;
        ``continuous_bernoulli`` +120 ± 2 / +141 ± 3; ``logistic-mixture`` +124 ± 3 / +110 ± 3;
        ``bernoulli`` +15.6 on binarized MNIST (15 epochs, seed 0, unpaired)."""
        return "torch" if self.likelihood_name == "gaussian" else "burda"

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z): event shape ``(x_dim,)``, batch shape ``z.shape[:-1]``. For
        ``logistic-mixture`` its values are the grey levels ``0..num_bins - 1``."""
        out = self.decoder(z)
        if self.likelihood_name == "logistic-mixture":  # (..., 3 K x_dim) -> (..., 3 K, x_dim)
            return mixture_likelihood(out.unflatten(-1, (-1, self.x_dim)), self.options.num_mixtures,
                                      self.options.num_bins)
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
        Bernoulli) logits of the mean pixel, the Gaussian mean, or the logistics' locations
        (``init="burda"``)."""
        if self.likelihood_name != "logistic-mixture":
            output_at_data_mean_(self.decoder[-1], x, self.likelihood_name)
            return
        k = self.options.num_mixtures
        centre = (2 * x.detach().mean(0) - 1).clamp(-0.99, 0.99)  # on the logistics' [-1, 1] scale
        with torch.no_grad():
            bias = self.decoder[-1].bias.view(3 * k, self.x_dim)  # rows: logits, locations, log-scales
            bias[k:2 * k] = torch.atanh(centre).to(bias)

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The value the likelihood scores: x itself, or its grey levels (``logistic-mixture``)."""
        return observed_value(self, x) if self.likelihood_name == "logistic-mixture" else x

    def _scaled(self, value: torch.Tensor) -> torch.Tensor:
        """A value of the likelihood on the data's scale (grey levels back to [0, 1])."""
        return value / (self.options.num_bins - 1) if self.likelihood_name == "logistic-mixture" else value

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model: ``x`` observed (shape ``(N, x_dim)``), or ``num_samples`` fresh draws."""
        n = self.batch_size(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            value = pyro.sample("x", self.likelihood(z), obs=None if x is None else self.observed(x))
        return self._scaled(value)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draws ``x ~ p(x)`` on the data's scale (the likelihood's mean given z ~ p(z) when ``mean``)."""
        z = self.prior(num_samples).sample()
        px = self.likelihood(z)
        return self._scaled(px.mean if mean else px.sample())
