"""A VAE with variance layers (Neklyudov et al.) in its decoder, and an encoder with them.

The generative model is the VAE's, with Bayesian decoder weights: the linear layers of the
decoder named by ``variance_layers`` have zero-mean Gaussian weights
:math:`q(w_{ij}) = \\mathcal{N}(0, \\sigma_{ij}^2)` (:mod:`pyrovae.nn.variance`), sampled by
local reparameterization:

.. math::
    z_n \\sim \\mathcal{N}(0, I), \\qquad
    W \\sim q(W) \\text{ (afresh for each datapoint)}, \\qquad
    x_n \\mid z_n, W \\sim p(x \\mid f_W(z_n)).

The objective over a data set of N points is

.. math::
    \\sum_n E_{q(W) q(z_n \\mid x_n)}\\big[\\log p(x_n \\mid z_n, W) + \\log p(z_n) - \\log q(z_n \\mid x_n)\\big]
    - \\mathrm{KL}(q(W) \\,\\|\\, p(W)).

In Pyro the weights are not a sample site: local reparameterization draws the layer's
pre-activations, not ``W``, and a global ``W`` site would sit outside the plate over the
batch (each datapoint could no longer have its own importance weight), with no density at
all under the improper log-uniform prior. The expectation over ``q(W)`` is taken by the
noise inside the decoder (one draw per datapoint and particle), and the KL enters as a
factor site inside the data plate, ``pyro.factor("weights_kl", -KL / N)`` per datapoint, so
that summed over the N training points the objective subtracts the KL once, whatever the
batch size; for K particles of an importance-weighted bound the same constant leaves each
particle's weight, so it is subtracted once per datapoint there too. Under the paper's
log-uniform prior the KL of a zero-mean Gaussian does not depend on the variances (see
:mod:`pyrovae.nn.variance`) and no factor is added; the ``normal`` prior needs
``num_data``. The factor is a term of the training objective, not of the density of ``x``:
the model adds it in training mode only, so :func:`~pyrovae.log_likelihood` (which puts the
pair in eval mode) estimates the predictive density
:math:`\\log E_{q(W)} p(x \\mid W) = \\log \\int q(W) p(z) p(x \\mid z, W)\\, dW\\, dz`, with
weights :math:`p(x \\mid z_k, W_k) p(z_k) / q(z_k \\mid x)`, an unbiased estimate of that
density for every K.

The guide ``variance-encoder`` (guides/variance.py) is the diagonal Gaussian encoder with variance layers in its
MLP (``encoder_variance_layers=(0,)``: the first layer, pixels to hidden units). There the weight
noise is an auxiliary variable of the proposal: with :math:`q(z \\mid x) = \\int q(W) q(z
\\mid x, W) dW`, the weights :math:`p(x, z)/q(z \\mid x, W)` with :math:`(W, z) \\sim q(W) q(z
\\mid x, W)` still average to :math:`p(x)` and their log is still a lower bound in
expectation (the bound of an auxiliary-variable guide with :math:`r(W \\mid x, z) = q(W)`), so
no KL is added for the encoder's weights.

References

[1] Neklyudov, Molchanov, Ashukha, Vetrov. Variance Networks: When Expectation Does Not Meet
    Your Expectations. ICLR 2019, arXiv:1803.03764
[2] Kingma, Salimans, Welling. Variational Dropout and the Local Reparameterization Trick.
    arXiv:1506.02557
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import torch

from pyrovae.models.vae import VAE
from pyrovae.registry import register_model
from pyrovae.nn.variance import VarianceMLP, check_prior, check_variance_layers


@register_model("variance-vae")
class VarianceVAE(VAE):
    """The VAE with variance layers in its decoder.

    The options of :class:`~pyrovae.models.vae.VAE`, and:

    :param tuple variance_layers: indices of the decoder's linear layers (0 = from z) that are
        variance layers; default ``(1,)``, the second (the middle layer of ``(200, 200)``; a
        first-layer variance layer sees only ``z**2`` and cannot tell ``z`` from ``-z``).
    :param str prior: ``log-uniform`` (the paper's; KL constant) or ``normal``.
    :param float prior_scale: s of the ``normal`` prior N(0, s^2).
    :param int num_data: N, the training set size (the KL is spread as KL/N per datapoint);
        required with the ``normal`` prior.
    :param bool bias: give the variance layers a deterministic bias.

    >>> model = VarianceVAE(x_dim=6, z_dim=2, hidden_dims=(8, 8))
    >>> model.sample(3).shape
    torch.Size([3, 6])
    """

    #: the VAE's closed-form-KL default was measured without variance layers: ``elbo``
    default_objective = None

    @dataclass
    class Options(VAE.Options):
        activation: str = "relu"
        variance_layers: Tuple[int, ...] = (1,)
        prior: str = "log-uniform"
        prior_scale: float = 1.0
        num_data: Optional[int] = None
        bias: bool = False

        def __post_init__(self):
            super().__post_init__()
            self.variance_layers = tuple(self.variance_layers)
            check_variance_layers(self.variance_layers, self.hidden_dims)
            check_prior(self.prior, self.prior_scale)
            if self.num_data is not None and not (isinstance(self.num_data, int) and self.num_data > 0):
                raise ValueError(f"num_data must be a positive integer (the training set size), got {self.num_data!r}")
            if self.prior != "log-uniform" and self.num_data is None:
                raise ValueError(f"prior={self.prior!r} needs num_data, the training set size, to spread the weights' "
                                 "KL over the datapoints; pass num_data=N (--num-data N)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.decoder = VarianceMLP(o.z_dim, o.hidden_dims, o.x_dim, o.variance_layers, o.activation, o.bias,
                                   o.prior, o.prior_scale)

    #: fit's default init: torch's layers. Burda et al.'s start (``init="burda"``: Glorot's
    #: ordinary layers, the output bias at the data's mean) gains after one epoch but costs
    #: 2.6-4.0 nats after 10 epochs and 7-21 after 30, paired, at two seeds (docs/hidden-talents.md).
    default_init = "torch"

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """The VAE's start (the output bias at the data's mean), where the decoder's last layer is
        an ordinary linear layer; a last variance layer has no bias to set."""
        if not isinstance(self.decoder[-1], torch.nn.Linear):
            raise ValueError("init='burda' sets the decoder's output bias; its last layer is a variance layer "
                             "(variance_layers names it): use init='glorot' or 'torch'")
        super().init_from_data(x)

    def weights_kl(self) -> torch.Tensor:
        """KL(q(W) || p(W)) over the decoder's variance layers."""
        return self.decoder.kl()

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        n = self.batch_size(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            if self.training and self.options.prior != "log-uniform":
                per_datapoint = self.weights_kl() / self.options.num_data
                pyro.factor("weights_kl", -per_datapoint * z.new_ones(z.shape[:-1]))
            return pyro.sample("x", self.likelihood(z), obs=x)
