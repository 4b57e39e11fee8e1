"""The conditional variational autoencoder (Sohn, Lee, Yan 2015; Doersch's tutorial, section 4).

A structured output ``y`` is predicted from an input ``x`` through a latent ``z`` drawn from a
*prior network* that sees the input:

.. math::
    z_n \\mid x_n \\sim p_\\theta(z \\mid x_n) = \\mathcal{N}(\\mu_\\theta(x_n), \\operatorname{diag}
    \\sigma^2_\\theta(x_n)), \\qquad
    y_n \\mid x_n, z_n \\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} g_\\theta(x_n, z_n))
    \\quad (n = 1..N),

so that :math:`p_\\theta(y \\mid x) = \\int p_\\theta(y \\mid x, z)\\, p_\\theta(z \\mid x)\\, dz`
is a mixture: several completions of one input. The recognition guide
:math:`q_\\phi(z \\mid x, y)` (guides/cvae.py) gives the conditional ELBO (Sohn et al., eq. 4)

.. math:: \\log p_\\theta(y \\mid x) \\ge \\mathbb{E}_{q_\\phi(z \\mid x, y)}
          [\\log p_\\theta(y \\mid x, z)] - \\mathrm{KL}(q_\\phi(z \\mid x, y) \\,\\|\\, p_\\theta(z \\mid x)),

and importance sampling with it as proposal estimates :math:`\\log p_\\theta(y \\mid x)`
(Sohn et al., eq. 6): the log-weights are :math:`\\log p(y, z \\mid x) - \\log q(z \\mid x, y)`.
The batch is ``{"x": input, "y": output}``; ``x`` is never modelled, only conditioned on.

``deterministic=True`` is Sohn et al.'s baseline, the same network without z: a deterministic
conditional model :math:`y \\mid x \\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid}
g_\\theta(x))` trained by maximum likelihood (its guide, also ``deterministic=True``, samples
nothing, and its "log-weights" are the exact :math:`\\log p(y \\mid x)`).

The objective ``cvae-hybrid`` is Sohn et al.'s hybrid (their eq. 9), the ELBO weighted by
``alpha`` plus the GSNN term (eq. 8) that trains the prior network as it is used at test time:

.. math:: \\alpha\\, \\mathrm{ELBO}(y \\mid x) + (1 - \\alpha)\\,
          \\mathbb{E}_{p_\\theta(z \\mid x)}[\\log p_\\theta(y \\mid x, z)].

On MNIST (``--data mnist-halves``, registered here) x is the top half of a digit and y its
bottom half; docs/cvae.md has the measured figures.

References

[1] Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional
    Generative Models. NeurIPS 2015.
[2] Doersch. Tutorial on Variational Autoencoders. arXiv:1606.05908
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

import pyrovae.data.halves  # noqa: F401  (registers the "mnist-halves" data set with the model that uses it)
from pyrovae.infer.importance import batch_size_of, observed_sites
from pyrovae.infer.objectives import ELBO, Objective
from pyrovae.nn import MLP, bias_at_data_logits_, check_positive
from pyrovae.models.base import Model, broadcast_cat
from pyrovae.registry import register_model, register_objective


@register_model("cvae")
class CVAE(Model):
    """p(z | x) p(y | x, z): a conditional VAE with a prior network (Sohn et al. 2015).

    :param int x_dim: size of the input x (conditioned on, not modelled).
    :param int y_dim: size of the output y (Bernoulli); None: the same as ``x_dim``.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: hidden widths of the prior network (x -> z) and of the
        generation network ([x, z] -> y).
    :param str activation: nonlinearity.
    :param bool deterministic: the baseline without z, p(y | x) = Bernoulli(g(x)).
    :param bool generator_sees_x: the generation network reads ``[x, z]`` (Sohn et al.'s
        p(y | x, z), the default); False: ``z`` alone, p(y | z) (Pyro's examples/cvae), x
        reaching y only through the prior network p(z | x).

    >>> model = CVAE(x_dim=6, y_dim=4, z_dim=2, hidden_dims=(8,))
    >>> model.complete(torch.zeros(3, 6), num_samples=5).shape
    torch.Size([5, 3, 4])
    """

    guide_name = "cvae"
    cannot_sample = 'a conditional model: p(y | x) needs an input x (complete inputs with model.complete(x))'

    @dataclass
    class Options:
        x_dim: int
        y_dim: Optional[int] = None
        z_dim: int = 20
        hidden_dims: Tuple[int, ...] = (200, 200)
        activation: str = "tanh"
        deterministic: bool = False
        generator_sees_x: bool = True

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            if self.y_dim is None:
                self.y_dim = self.x_dim
            if self.deterministic and not self.generator_sees_x:
                raise ValueError("the deterministic baseline p(y | x) has no z: its generation network must see x "
                                 "(leave generator_sees_x=True)")
            check_positive(x_dim=self.x_dim, y_dim=self.y_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.y_dim, self.z_dim, self.deterministic = o.x_dim, o.y_dim, o.z_dim, o.deterministic
        if o.deterministic:
            self.generator = MLP(o.x_dim, o.hidden_dims, o.y_dim, o.activation)
        else:
            self.prior_net = MLP(o.x_dim, o.hidden_dims, 2 * o.z_dim, o.activation)
            self.generator = MLP((o.x_dim if o.generator_sees_x else 0) + o.z_dim, o.hidden_dims, o.y_dim,
                                 o.activation)

    def prior(self, x: torch.Tensor) -> dist.Distribution:
        """p(z | x): the prior network's diagonal Normal, batch shape ``x.shape[:-1]``."""
        if self.deterministic:
            raise ValueError("a deterministic CVAE (the baseline) has no latent z and no prior p(z | x)")
        loc, raw_scale = self.prior_net(x).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1)

    def likelihood(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> dist.Distribution:
        """p(y | x, z) (p(y | x) when deterministic): Bernoulli, event shape ``(y_dim,)``,
        batch shape ``z.shape[:-1]`` (``x.shape[:-1]`` without z)."""
        if self.deterministic:
            logits = self.generator(x)
        elif self.options.generator_sees_x:
            logits = self.generator(broadcast_cat(x, z))
        else:
            logits = self.generator(z)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor, **unused) -> None:
        """Start the generator's output at the logits of the outputs' mean pixel (``init="burda"``,
        the default of ``fit``)."""
        bias_at_data_logits_(self.generator[-1], y)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """The model: ``y`` observed given ``x`` (both ``(N, dim)``), or drawn when None."""
        with pyro.plate("data", x.shape[0]):
            z = None if self.deterministic else pyro.sample("z", self.prior(x))
            return pyro.sample("y", self.likelihood(x, z), obs=y)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int = 1, mean: bool = True) -> torch.Tensor:
        """Completions of the inputs ``x`` ``(N, x_dim)``: ``(num_samples, N, y_dim)`` draws of y
        with z ~ p(z | x) (the mean of p(y | x, z) when ``mean``, else a binary draw)."""
        if self.deterministic:
            py = self.likelihood(x)
            out = py.mean if mean else py.sample((num_samples,))
            return out.expand(num_samples, *out.shape[-2:])
        z = self.prior(x).sample((num_samples,))
        py = self.likelihood(x, z)
        return py.mean if mean else py.sample()


@register_objective("cvae-hybrid")
class HybridObjective(Objective):
    """Sohn et al.'s hybrid: alpha * ELBO + (1 - alpha) * E_{p(z|x)}[log p(y | x, z)] (GSNN).

    The GSNN term runs the model alone, z drawn (reparameterized) from its prior network, and
    scores the observed sites; ``alpha=1`` is the ELBO, ``alpha=0`` the GSNN of Sohn et al.

    :param float alpha: the ELBO's weight, in [0, 1] (``--alpha``).
    """

    name = "cvae-hybrid"

    @dataclass
    class Options(Objective.Options):
        alpha: float = 0.5

        def __post_init__(self):
            super().__post_init__()
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"cvae-hybrid needs 0 <= alpha <= 1 (the ELBO's weight), got {self.alpha}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = float(self.options.alpha)
        self._elbo = ELBO()

    def loss(self, model, guide, batch):
        loss = self.alpha * self._elbo.loss(model, guide, batch) if self.alpha > 0 else 0.0
        if self.alpha < 1:
            trace = pyro.poutine.trace(model).get_trace(**batch)
            trace.compute_log_prob()
            gsnn = sum(site["log_prob"].sum() for site in observed_sites(trace)) / batch_size_of(batch)
            loss = loss - (1 - self.alpha) * gsnn
        return loss
