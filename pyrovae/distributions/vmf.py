"""The von Mises-Fisher distribution on the unit sphere :math:`S^{d-1}`.

.. math:: q(z; \\mu, \\kappa) = C_d(\\kappa)\\, e^{\\kappa \\mu^\\top z}, \\qquad
          C_d(\\kappa) = \\frac{\\kappa^{d/2-1}}{(2\\pi)^{d/2} I_{d/2-1}(\\kappa)},

with :math:`E[z] = A_d(\\kappa) \\mu`, :math:`A_d = I_{d/2}/I_{d/2-1}`.

**Sampling** (Wood [2]). Draw :math:`w = \\mu^\\top z` by rejection: propose
:math:`\\epsilon \\sim \\mathrm{Beta}(\\frac{d-1}{2}, \\frac{d-1}{2})`,
:math:`w = h(\\epsilon, \\kappa) = \\frac{1 - (1+b)\\epsilon}{1 - (1-b)\\epsilon}`,
:math:`b = \\frac{d-1}{2\\kappa + \\sqrt{4\\kappa^2 + (d-1)^2}}`; then
:math:`z = R_\\mu\\, (w, \\sqrt{1-w^2}\\, v)` with :math:`v` uniform on :math:`S^{d-2}` and
:math:`R_\\mu` a reflection taking :math:`e_1` to :math:`\\mu`. All of :math:`1-w`,
:math:`1-w^2` and the acceptance test are written without cancellation, so
:math:`\\kappa = 10^4` is fine in float32.

**Gradients** (Davidson et al. [1], after Naesseth et al. [3]). The accepted
:math:`\\epsilon` has a density that depends on :math:`\\kappa`, so the pathwise gradient
through :math:`h(\\epsilon, \\kappa)` alone is biased. The unbiased gradient of
:math:`E_q[f(z)]` adds

.. math:: g_{cor} = E\\Big[f(z)\\, \\nabla_\\kappa \\log
          \\frac{q_w(h(\\epsilon,\\kappa); \\kappa)}{r(h(\\epsilon,\\kappa); \\kappa)}\\Big],
          \\qquad \\log \\frac{q_w}{r} = \\log q_w(h(\\epsilon, \\kappa); \\kappa)
          + \\log \\Big|\\frac{\\partial h}{\\partial \\epsilon}\\Big| + \\mathrm{const},

:math:`q_w(w) \\propto e^{\\kappa w}(1-w^2)^{(d-3)/2}` the marginal of :math:`w`. It is
returned as the *score-function part* of :meth:`score_parts` (zero-valued, with this
gradient), which Pyro's ``Trace_ELBO`` and ``TraceGraph_ELBO`` multiply by the downstream
cost. Objectives that read only the sample path (``TraceMeanField_ELBO``, hand-written
bounds over ``log_prob``) do not see it: build the distribution with
``gradient_correction=False`` for them (``TraceMeanField_ELBO`` refuses a non-zero score
part under validation), accepting the small bias of the reference implementation. With a
constant :math:`\\kappa` (no gradient) the correction vanishes and the distribution is fully
reparameterized.

>>> import torch
>>> q = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(5.0))
>>> z = q.rsample((2,))
>>> z.shape, q.event_shape
(torch.Size([2, 3]), torch.Size([3]))
>>> round(float(q.log_prob(torch.tensor([0.0, 0.0, 1.0]))), 4)  # log(5 / (2 pi (1 - e^-10)))
-0.2284

References

[1] Davidson, Falorsi, De Cao, Kipf, Tomczak. Hyperspherical Variational Auto-Encoders.
    arXiv:1804.00891
[2] Wood. Simulation of the von Mises Fisher distribution. Communications in Statistics -
    Simulation and Computation 23(1), 1994.
[3] Naesseth, Ruiz, Linderman, Blei. Reparameterization Gradients through
    Acceptance-Rejection Sampling Algorithms. arXiv:1610.05683
[4] Xu, Durrett. Spherical Latent Spaces for Stable Variational Autoencoders.
    arXiv:1808.10805 (fixed concentration)
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.score_parts import ScoreParts
from torch.distributions import Beta
from torch.distributions.kl import register_kl
from torch.distributions.utils import lazy_property

from pyrovae.distributions.bessel import bessel_ratio, log_bessel_ive
from pyrovae.distributions.hyperspherical_uniform import HypersphericalUniform, log_sphere_area

MAX_REJECTION_ROUNDS = 1000


class VonMisesFisher(TorchDistribution):
    """von Mises-Fisher on :math:`S^{d-1}`: event shape ``(d,)``, batch shape the broadcast
    of ``loc.shape[:-1]`` and ``concentration.shape``.

    :param torch.Tensor loc: mean direction :math:`\\mu`, unit vectors ``(..., d)``, d >= 2.
    :param torch.Tensor concentration: :math:`\\kappa > 0`, shape broadcastable to the batch.
    :param bool gradient_correction: add the rejection-sampling gradient correction of [1]
        as a score-function term (see the module docstring).
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration, gradient_correction: bool = True, validate_args=None):
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc must have a last dimension d >= 2 (the sphere S^(d-1)), "
                             f"got shape {tuple(loc.shape)}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.dim = loc.shape[-1]
        self.loc = loc.expand(batch_shape + (self.dim,))
        self.concentration = concentration.expand(batch_shape)
        self.gradient_correction = gradient_correction
        self._cache = None  # (sample, accepted epsilon) of the latest rsample
        super().__init__(batch_shape, torch.Size([self.dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        new.dim = self.dim
        new.loc = self.loc.expand(batch_shape + (self.dim,))
        new.concentration = self.concentration.expand(batch_shape)
        new.gradient_correction = self.gradient_correction
        new._cache = None
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def order(self) -> float:
        """The Bessel order :math:`\\nu = d/2 - 1` of the normalizer."""
        return self.dim / 2 - 1

    @lazy_property
    def log_normalizer_scaled(self) -> torch.Tensor:
        """:math:`\\log C_d(\\kappa) + \\kappa` (moderate in size for large kappa; float64 inside)."""
        kappa = self.concentration.double()
        value = (self.order * torch.log(kappa) - 0.5 * self.dim * math.log(2 * math.pi)
                 - log_bessel_ive(self.order, kappa))
        return value.to(self.concentration.dtype)

    @property
    def log_normalizer(self) -> torch.Tensor:
        """:math:`\\log C_d(\\kappa)`."""
        return self.log_normalizer_scaled - self.concentration

    @lazy_property
    def mean_resultant_length(self) -> torch.Tensor:
        """:math:`A_d(\\kappa) = E[\\mu^\\top z] = I_{d/2}(\\kappa) / I_{d/2-1}(\\kappa)`."""
        return bessel_ratio(self.order, self.concentration)

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_resultant_length.unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def entropy(self) -> torch.Tensor:
        # -(log C + kappa) + kappa (1 - A): no large terms cancelling for large kappa
        return -self.log_normalizer_scaled + self.concentration * (1 - self.mean_resultant_length)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        # kappa (mu.z - 1) + (log C + kappa): no large terms cancelling for large kappa
        cos = (self.loc * value).sum(-1)
        return self.concentration * (cos - 1) + self.log_normalizer_scaled

    # ---- sampling -----------------------------------------------------------------------
    def _b(self, kappa: torch.Tensor) -> torch.Tensor:
        m1 = self.dim - 1
        return m1 / (2 * kappa + torch.sqrt(4 * kappa * kappa + m1 * m1))

    @torch.no_grad()
    def _sample_epsilon(self, kappa: torch.Tensor) -> torch.Tensor:
        """Wood's rejection step: Beta proposals epsilon whose w = h(epsilon, kappa) is accepted."""
        m1 = self.dim - 1
        b = self._b(kappa)
        one_minus_x0 = 2 * b / (1 + b)
        x0 = (1 - b) / (1 + b)
        log_one_minus_x0_sq = torch.log(4 * b) - 2 * torch.log1p(b)
        proposal = Beta(kappa.new_tensor(m1 / 2), kappa.new_tensor(m1 / 2))
        epsilon = torch.full_like(kappa, 0.5)
        done = torch.zeros_like(kappa, dtype=torch.bool)
        for _ in range(MAX_REJECTION_ROUNDS):
            e = proposal.sample(kappa.shape)
            denom = 1 - (1 - b) * e
            one_minus_w = 2 * b * e / denom
            log_accept = (kappa * (one_minus_x0 - one_minus_w)
                          + m1 * (torch.log(one_minus_x0 + x0 * one_minus_w) - log_one_minus_x0_sq))
            accept = ~done & (torch.log(torch.rand_like(kappa)) <= log_accept)
            epsilon = torch.where(accept, e, epsilon)
            done = done | accept
            if bool(done.all()):
                return epsilon
        raise RuntimeError(f"vMF rejection sampler did not finish in {MAX_REJECTION_ROUNDS} rounds "
                           f"(concentration range {float(kappa.min())}..{float(kappa.max())})")

    def _w_terms(self, epsilon, kappa):
        """(1 - w, 1 + w, b, 1 - (1-b) epsilon) as differentiable functions of kappa."""
        b = self._b(kappa)
        denom = 1 - (1 - b) * epsilon
        return 2 * b * epsilon / denom, 2 * (1 - epsilon) / denom, b, denom

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        kappa = self.concentration.expand(shape)
        loc = self.loc.expand(shape + (self.dim,))
        epsilon = self._sample_epsilon(kappa.detach())
        one_minus_w, one_plus_w, _, _ = self._w_terms(epsilon, kappa)
        v = torch.randn(shape + (self.dim - 1,), dtype=loc.dtype, device=loc.device)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
        radius = torch.sqrt((one_minus_w * one_plus_w).clamp_min(0))
        z = torch.cat([(1 - one_minus_w).unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
        z = _reflect_e1_to(loc, z)
        self._cache = (z, epsilon)
        return z

    def score_parts(self, value: torch.Tensor) -> ScoreParts:
        log_prob = self.log_prob(value)
        if not (self.gradient_correction and self.concentration.requires_grad and torch.is_grad_enabled()):
            return ScoreParts(log_prob=log_prob, score_function=0, entropy_term=log_prob)
        kappa = self.concentration
        if self._cache is not None and self._cache[0] is value:
            epsilon = self._cache[1]
        else:  # a value this instance did not draw: recover epsilon from w = mu.z
            with torch.no_grad():
                w = (self.loc * value).sum(-1)
                b = self._b(kappa)
                epsilon = (1 - w) / ((1 + b) - (1 - b) * w)
        one_minus_w, _, b, denom = self._w_terms(epsilon, kappa)
        # log q_w(h(eps, kappa); kappa) + log |dh/deps|, up to terms free of kappa
        alpha_plus_one = (self.dim - 1) / 2
        log_ratio = (-kappa * one_minus_w + self.order * torch.log(kappa) - log_bessel_ive(self.order, kappa)
                     + alpha_plus_one * (torch.log(b) - 2 * torch.log(denom)))
        score = log_ratio - log_ratio.detach()
        return ScoreParts(log_prob=log_prob, score_function=score, entropy_term=log_prob)


def _reflect_e1_to(loc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An orthogonal map taking e_1 to ``loc``, applied to ``x`` (both ``(..., d)``).

    For mu_1 <= 0 the Householder reflection with u = e_1 - mu; otherwise minus the one
    with u = e_1 + mu (it takes e_1 to -mu): either way |u|^2 >= 2, no division by ~0."""
    sign = torch.where(loc[..., :1] > 0, -1.0, 1.0).to(loc.dtype)  # (..., 1)
    u = -sign * loc
    u = torch.cat([u[..., :1] + 1, u[..., 1:]], dim=-1)  # e_1 - sign * mu
    coef = 2 * (u * x).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
    return sign * (x - coef * u)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(q: VonMisesFisher, p: HypersphericalUniform) -> torch.Tensor:
    """:math:`KL = \\log C_d(\\kappa) + \\kappa A_d(\\kappa) + \\log |S^{d-1}|`."""
    if q.dim != p.dim:
        raise ValueError(f"KL between a vMF on S^{q.dim - 1} and a uniform on S^{p.dim - 1}: dimensions differ")
    return -q.entropy() + log_sphere_area(q.dim)
