"""Variance layers (Neklyudov, Molchanov, Ashukha, Vetrov): linear layers whose weights have
zero mean and a learned variance each.

A variance layer maps ``x`` (``in_features``) to ``b = x W`` with independent weights

.. math:: q(w_{ij}) = \\mathcal{N}(0, \\sigma_{ij}^2),

so given ``x`` the pre-activation ``b_j`` is Gaussian with mean 0 and variance
:math:`\\sum_i x_i^2 \\sigma_{ij}^2`. The local reparameterization trick (Kingma, Salimans,
Welling 2015) samples ``b`` directly, ``b_j = \\sqrt{\\sum_i x_i^2 \\sigma_{ij}^2}\\,
\\varepsilon_j``, one ``\\varepsilon`` per datapoint (and per particle): the same output
distribution as drawing ``W`` afresh for every datapoint, at the cost of one matrix product
instead of one per datapoint. All of the layer's information is in the variances: the mean
of its output is zero whatever ``x`` is, and a nonlinearity after it (a ReLU:
:math:`E[\\mathrm{relu}(b)] = \\mathrm{sd}(b) / \\sqrt{2\\pi}`) turns the variance into a
signal the next layer can read. The layers stay stochastic in eval mode: there is no "mean
network" to fall back to, since every weight's mean is zero.

Priors and the KL term (:meth:`VarianceLinear.kl`):

- ``log-uniform`` (the paper's): :math:`p(w) \\propto 1/|w|`. It is scale-invariant, so for a
  zero-mean Gaussian :math:`q`,

  .. math:: \\mathrm{KL}(q \\,\\|\\, p) = -\\tfrac12 \\log(2\\pi e \\sigma^2) + E_q \\log|w| + C
            = -\\tfrac12 \\log(2\\pi e) + E_{\\varepsilon \\sim \\mathcal{N}(0,1)} \\log|\\varepsilon| + C,

  the same for every :math:`\\sigma` (:math:`\\log|w| = \\log\\sigma + \\log|\\varepsilon|`
  cancels the entropy's :math:`\\log\\sigma`). The prior is improper, so the constant has no
  value of its own; Molchanov et al.'s approximation of this KL,
  :math:`-\\mathrm{KL} \\approx k_1 \\mathrm{sigmoid}(k_2 + k_3 \\log\\alpha) - \\tfrac12 \\log(1 +
  1/\\alpha) - k_1` with :math:`\\alpha = \\sigma^2/\\mu^2`, tends to 0 as :math:`\\alpha \\to
  \\infty` (zero mean), and that is the value used: 0. The objective is then the expected
  log-likelihood under the weight noise alone, which is what the paper trains.
- ``normal``: :math:`p(w) = \\mathcal{N}(0, s^2)`, a proper prior whose KL depends on
  :math:`\\sigma`: :math:`\\tfrac12 (\\log s^2 - \\log\\sigma^2) + \\sigma^2 / (2 s^2) - \\tfrac12`
  per weight (pulls the variances towards :math:`s^2`).

References

[1] Neklyudov, Molchanov, Ashukha, Vetrov. Variance Networks: When Expectation Does Not Meet
    Your Expectations. ICLR 2019, arXiv:1803.03764
[2] Kingma, Salimans, Welling. Variational Dropout and the Local Reparameterization Trick.
    arXiv:1506.02557
[3] Molchanov, Ashukha, Vetrov. Variational Dropout Sparsifies Deep Neural Networks.
    arXiv:1701.05369
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from pyrovae.nn.layers import activation as make_activation

PRIORS = ("log-uniform", "normal")


def check_prior(prior: str, prior_scale: float) -> None:
    if prior not in PRIORS:
        raise ValueError(f"unknown variance-layer prior {prior!r}; choose one of {PRIORS}")
    if not prior_scale > 0:
        raise ValueError(f"prior_scale must be positive, got {prior_scale}")


def normal_kl(log_sigma2: torch.Tensor, prior_scale: float) -> torch.Tensor:
    """KL(N(0, sigma^2) || N(0, s^2)) per weight."""
    log_s2 = 2 * math.log(prior_scale)
    return 0.5 * (log_s2 - log_sigma2) + 0.5 * log_sigma2.exp() / prior_scale ** 2 - 0.5


class VarianceLinear(nn.Module):
    """A linear layer with zero-mean Gaussian weights ``w_ij ~ N(0, sigma_ij^2)``, sampled by
    local reparameterization (one draw of the pre-activations per row of the input).

    :param int in_features: input width.
    :param int out_features: output width.
    :param bool bias: add a learned deterministic bias (default off: a pure variance layer,
        zero-mean output).
    :param str prior: ``log-uniform`` (KL constant, taken as 0) or ``normal``.
    :param float prior_scale: s, the scale of the ``normal`` prior.

    >>> layer = VarianceLinear(4, 3)
    >>> layer(torch.ones(5, 4)).shape, layer.weight_variance.shape
    (torch.Size([5, 3]), torch.Size([3, 4]))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, prior: str = "log-uniform",
                 prior_scale: float = 1.0):
        super().__init__()
        check_prior(prior, prior_scale)
        self.in_features, self.out_features = in_features, out_features
        self.prior, self.prior_scale = prior, float(prior_scale)
        # Output variance ~ the usual 2/fan_in scale for unit inputs, spread a little so
        # that units differ from the start.
        init = math.log(2.0 / in_features) + 0.5 * torch.randn(out_features, in_features)
        self.log_sigma2 = nn.Parameter(init)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight_variance(self) -> torch.Tensor:
        """sigma^2, ``(out_features, in_features)``."""
        return self.log_sigma2.exp()

    def output_variance(self, x: torch.Tensor) -> torch.Tensor:
        """Var(b | x) = (x^2) sigma^2 per output, ``x.shape[:-1] + (out_features,)``."""
        return (x * x) @ self.weight_variance.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = self.output_variance(x)
        b = (var + 1e-16).sqrt() * torch.randn_like(var)
        return b if self.bias is None else b + self.bias

    def sample_weight(self, *shape) -> torch.Tensor:
        """Draw weights ``W ~ q`` directly, ``shape + (in_features, out_features)`` (for tests and
        for comparing with local reparameterization)."""
        sd = self.weight_variance.sqrt().T
        return sd * torch.randn(*shape, *sd.shape, device=sd.device, dtype=sd.dtype)

    def kl(self) -> torch.Tensor:
        """KL(q(W) || p(W)) summed over the weights (0 under the log-uniform prior: see the module)."""
        if self.prior == "log-uniform":
            return self.log_sigma2.new_zeros(())
        return normal_kl(self.log_sigma2, self.prior_scale).sum()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"prior={self.prior!r}")


def check_variance_layers(variance_layers: Sequence[int], hidden_dims: Sequence[int], what: str = "variance_layers"):
    """Raise a ValueError unless each index names one of the ``len(hidden_dims) + 1`` linear layers."""
    num = len(hidden_dims) + 1
    bad = [i for i in variance_layers if not isinstance(i, int) or not 0 <= i < num]
    if bad or len(set(variance_layers)) != len(variance_layers):
        raise ValueError(f"{what} must be distinct indices of linear layers 0..{num - 1} (there are "
                         f"len(hidden_dims) + 1 = {num}), got {tuple(variance_layers)}")


class VarianceMLP(nn.Sequential):
    """An MLP ``in_dim -> hidden_dims... -> out_dim`` whose linear layers at the indices
    ``variance_layers`` (0 = the first) are :class:`VarianceLinear` and the rest ``nn.Linear``.

    :param int in_dim: input width.
    :param hidden_dims: hidden widths.
    :param int out_dim: output width.
    :param variance_layers: indices of the linear layers that are variance layers.
    :param str activation: nonlinearity between layers (``relu`` by default: an even part
        is needed to read a zero-mean layer's variance).
    :param bool bias: give the variance layers a deterministic bias.
    :param str prior: the variance layers' prior.
    :param float prior_scale: its scale (``normal``).

    >>> net = VarianceMLP(4, (8,), 2, variance_layers=(0,))
    >>> [type(m).__name__ for m in net]
    ['VarianceLinear', 'ReLU', 'Linear']
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, variance_layers: Sequence[int] = (0,),
                 activation: str = "relu", bias: bool = False, prior: str = "log-uniform", prior_scale: float = 1.0):
        hidden_dims = tuple(hidden_dims)
        check_variance_layers(tuple(variance_layers), hidden_dims)
        dims = [in_dim, *hidden_dims, out_dim]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i in variance_layers:
                layers.append(VarianceLinear(d_in, d_out, bias=bias, prior=prior, prior_scale=prior_scale))
            else:
                layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(make_activation(activation))
        super().__init__(*layers)

    def variance_modules(self) -> list:
        return [m for m in self if isinstance(m, VarianceLinear)]

    def kl(self) -> torch.Tensor:
        """KL(q(W) || p(W)) summed over every variance layer."""
        total = next(self.parameters()).new_zeros(())
        for m in self.variance_modules():
            total = total + m.kl()
        return total
