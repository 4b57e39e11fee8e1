"""The von Mises-Fisher distribution, the uniform on the sphere and the log-Bessel functions,
against closed forms, scipy, a power series, quadrature, Pyro's VonMises / VonMises3D and
Monte Carlo with stated tolerances."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import ive, gammaln

from pyrovae.distributions import (
    HypersphericalUniform, VonMisesFisher, bessel_ratio, log_bessel_iv, log_bessel_ive,
)

ORDERS = [0.0, 0.5, 1.0, 1.5, 4.0, 14.5, 15.0, 49.5, 99.0, 499.0]  # d = 2, 3, 4, 5, 10, 31, 32, 101, 200, 1000
ARGS = np.logspace(-3, 4, 15)


def series_log_iv(v, x, terms=3000):
    """log I_v(x) from the power series sum_k (x^2/4)^k / (k! Gamma(v + k + 1)) (small x)."""
    k = np.arange(terms)
    log_terms = 2 * k * np.log(x / 2) - gammaln(k + 1) - gammaln(v + k + 1)
    top = log_terms.max()
    return v * np.log(x / 2) + top + np.log(np.exp(log_terms - top).sum())


def reference_log_ive(v, x):
    """scipy where ive is a normal float, the power series where it underflows."""
    value = ive(v, x)
    if value > 1e-290:
        return math.log(value)
    return series_log_iv(v, x) - x


def test_log_bessel_matches_scipy_and_the_series_on_a_grid():
    worst = 0.0
    for v in ORDERS:
        x = torch.tensor(ARGS, dtype=torch.float64)
        got = log_bessel_ive(v, x).numpy()
        ref = np.array([reference_log_ive(v, xi) for xi in ARGS])
        assert np.isfinite(got).all()
        err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
        worst = max(worst, err.max())
    assert worst < 1e-10, worst


def test_log_bessel_small_argument_matches_the_series_where_scipy_underflows():
    for v in [99.0, 499.0]:
        for x in [1e-3, 0.1, 1.0]:
            assert ive(v, x) == 0 or v < 200  # scipy underflows for the large orders
            got = float(log_bessel_iv(v, torch.tensor(x, dtype=torch.float64)))
            assert got == pytest.approx(series_log_iv(v, x), rel=1e-12)


def test_bessel_ratio_matches_scipy_on_a_grid():
    for v in ORDERS:
        for x in ARGS:
            if ive(v, x) < 1e-290:
                ref = math.exp(series_log_iv(v + 1, x) - series_log_iv(v, x))
            else:
                ref = ive(v + 1, x) / ive(v, x)
            got = float(bessel_ratio(v, torch.tensor(x, dtype=torch.float64)))
            assert got == pytest.approx(ref, rel=1e-9), (v, x)


def test_the_debye_series_summed_as_powers_equals_the_former_horner_loop():
    """The expansion's polynomial, summed as powers times coefficients for two orders at once,
    equals the former evaluation (one Horner loop per order) to float64 rounding, and the float32
    results are the same numbers."""
    from pyrovae.distributions import bessel

    x = torch.logspace(-3, 4.5, 500, dtype=torch.float64)

    def horner(order):  # the former _debye_log_ive
        z = x / order
        root = torch.sqrt(1 + z * z)
        t = 1 / root
        series = torch.zeros_like(t)
        for c in reversed(bessel._series_coefficients(order)):
            series = series * t + c
        return (order * (1 / (root + z) + torch.log(z / (1 + root))) - 0.5 * math.log(2 * math.pi * order)
                + 0.5 * torch.log(t) + torch.log(series))

    for order in (15.0, 19.0, 500.0):
        both = bessel._debye_log_ive((order, order + 1), x)
        for got, want in zip(both, (horner(order), horner(order + 1))):
            assert torch.allclose(got, want, rtol=1e-14, atol=1e-13)
            assert torch.equal(got.float(), want.float())


def test_the_recurrence_summed_as_polynomials_equals_the_former_step_by_step_recurrence():
    """The backward recurrence from the expansion's order down to v, summed as Lommel polynomials
    in x or 1/x (a few operations), equals the former step-by-step recurrence of the ratios to
    float64 rounding from x = 1e-300 to 1e6 (1e-14 relative in the ratio and log I; the former
    loop summed n logs and lost up to 3e-12 at the smallest x, where the new one is exact)."""
    from pyrovae.distributions import bessel

    x = torch.cat([torch.logspace(-300, 6, 2000, dtype=torch.float64), torch.logspace(-3, 4.5, 3000, dtype=torch.float64)])
    for v in (0.0, 0.5, 1.0, 2.5, 4.0, 7.3, 14.5, 14.99):
        log_ive, ratio = bessel._log_ive_and_ratio(v, x)
        old_log_ive, old_ratio = bessel._log_ive_and_ratio_stepwise(v, x)
        assert torch.allclose(ratio, old_ratio, rtol=1e-14, atol=0), v
        assert torch.allclose(log_ive, old_log_ive, rtol=1e-14, atol=3e-12), v
    x32 = torch.rand(1000) * 30 + 0.01  # what a vMF in float32 gets
    for v in (0.5, 4.0, 14.5):
        assert torch.allclose(log_bessel_ive(v, x32), bessel._log_ive_and_ratio_stepwise(v, x32)[0].float(), rtol=1e-6)


def test_one_bessel_evaluation_gives_the_normalizer_and_the_mean_length_with_their_gradients():
    from pyrovae.distributions.bessel import log_bessel_ive_and_ratio

    x = torch.tensor([0.05, 1.3, 20.0, 700.0], dtype=torch.float64, requires_grad=True)
    log_ive, ratio = log_bessel_ive_and_ratio(4.0, x)
    assert torch.equal(log_ive, log_bessel_ive(4.0, x)) and torch.equal(ratio, bessel_ratio(4.0, x))
    (g1,) = torch.autograd.grad((log_ive * 2 + ratio * 3).sum(), x)
    (g2,) = torch.autograd.grad((log_bessel_ive(4.0, x) * 2 + bessel_ratio(4.0, x) * 3).sum(), x)
    assert torch.allclose(g1, g2, rtol=1e-14)
    assert torch.autograd.gradcheck(lambda t: log_bessel_ive_and_ratio(1.5, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_bessel_closed_forms_of_half_integer_order():
    x = torch.tensor([0.01, 0.7, 3.0, 40.0, 1e4], dtype=torch.float64)
    # I_{1/2}(x) = sqrt(2 / (pi x)) sinh(x); I_{3/2}/I_{1/2} = coth(x) - 1/x
    expected = 0.5 * torch.log(2 / (math.pi * x)) + x + torch.log1p(-torch.exp(-2 * x)) - math.log(2)
    assert torch.allclose(log_bessel_iv(0.5, x), expected, rtol=1e-12)
    assert torch.allclose(bessel_ratio(0.5, x), 1 / torch.tanh(x) - 1 / x, rtol=1e-10)


@pytest.mark.parametrize("v", [0.0, 1.5, 14.5, 499.0])
def test_bessel_gradients_against_finite_differences(v):
    x = torch.tensor([0.05, 1.3, 20.0, 700.0, 1e4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_ive(v, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradcheck(lambda t: bessel_ratio(v, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_bessel_float32_large_arguments_are_finite():
    x = torch.tensor([1e-4, 1.0, 1e4], requires_grad=True)
    y = log_bessel_iv(499.0, x)
    y.sum().backward()
    assert y.dtype == torch.float32 and torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# ---- the uniform on the sphere --------------------------------------------------------------

def test_hyperspherical_uniform():
    p = HypersphericalUniform(3, batch_shape=(4,))
    z = p.sample((1000,))
    assert z.shape == (1000, 4, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones(()), atol=1e-6)
    assert z.mean((0, 1)).abs().max() < 4 * (1 / 3) ** 0.5 / 4000 ** 0.5  # E z = 0, var = 1/3
    assert torch.allclose(p.log_prob(z), torch.tensor(-math.log(4 * math.pi)))
    assert float(HypersphericalUniform(2).log_prob(torch.tensor([1.0, 0.0]))) == pytest.approx(-math.log(2 * math.pi))
    assert p.expand((2, 4)).sample().shape == (2, 4, 3)
    with pytest.raises(ValueError, match="dim >= 2"):
        HypersphericalUniform(1)


# ---- the von Mises-Fisher -------------------------------------------------------------------

def unit(v):
    v = torch.as_tensor(v, dtype=torch.float64)
    return v / v.norm()


@pytest.mark.parametrize("kappa", [0.3, 4.0, 60.0])
def test_density_integrates_to_one_on_the_circle(kappa):
    q = VonMisesFisher(unit([0.6, -0.8]), torch.tensor(kappa, dtype=torch.float64))
    theta = torch.linspace(0, 2 * math.pi, 4001, dtype=torch.float64)[:-1]
    z = torch.stack([theta.cos(), theta.sin()], -1)
    total = q.log_prob(z).exp().sum() * (2 * math.pi / 4000)  # periodic trapezoid rule
    assert float(total) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("kappa", [0.3, 4.0, 30.0])
def test_density_integrates_to_one_on_the_sphere(kappa):
    q = VonMisesFisher(unit([0.3, -0.5, 0.8]), torch.tensor(kappa, dtype=torch.float64))
    nodes, weights = np.polynomial.legendre.leggauss(200)  # in cos(theta)
    cos_t = torch.tensor(nodes).reshape(-1, 1)
    phi = torch.linspace(0, 2 * math.pi, 401, dtype=torch.float64)[:-1].reshape(1, -1)
    sin_t = (1 - cos_t ** 2).sqrt()
    z = torch.stack(torch.broadcast_tensors(sin_t * phi.cos(), sin_t * phi.sin(), cos_t), -1)
    density = q.log_prob(z).exp()  # (200, 400)
    total = (density.sum(1) * (2 * math.pi / 400) * torch.tensor(weights)).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-8)


def test_log_prob_matches_pyro_von_mises_in_2d_and_von_mises_3d():
    torch.manual_seed(0)
    for kappa in [0.1, 2.0, 50.0, 1e4]:
        theta = torch.rand(20, dtype=torch.float64) * 2 * math.pi - math.pi
        q2 = VonMisesFisher(unit([math.cos(1.0), math.sin(1.0)]), torch.tensor(kappa, dtype=torch.float64))
        ref2 = dist.VonMises(torch.tensor(1.0, dtype=torch.float64), torch.tensor(kappa, dtype=torch.float64))
        z2 = torch.stack([theta.cos(), theta.sin()], -1)
        # torch's VonMises uses a polynomial approximation of I_0 (about 1e-7 relative)
        assert torch.allclose(q2.log_prob(z2), ref2.log_prob(theta), rtol=0, atol=1e-6)

        mu = unit([1.0, -2.0, 0.5])
        q3 = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64))
        z3 = torch.randn(20, 3, dtype=torch.float64)
        z3 = z3 / z3.norm(dim=-1, keepdim=True)
        # closed form: kappa (mu.z - 1) + log(kappa / (2 pi (1 - exp(-2 kappa))))
        closed = kappa * (z3 @ mu - 1) + math.log(kappa / (2 * math.pi)) - math.log1p(-math.exp(-2 * kappa))
        assert torch.allclose(q3.log_prob(z3), closed, rtol=1e-12, atol=1e-9)
        if kappa <= 50:  # Pyro's VonMises3D overflows to -inf for large kappa
            assert torch.allclose(q3.log_prob(z3), dist.VonMises3D(kappa * mu).log_prob(z3), rtol=1e-9, atol=1e-8)


CASES = [(2, 0.5), (3, 10.0), (5, 1.0), (10, 100.0), (100, 50.0), (1000, 1e4)]


@pytest.mark.parametrize("d,kappa", CASES)
def test_samples_mean_resultant_length_and_direction(d, kappa):
    torch.manual_seed(d)
    n = 20000
    mu = unit(torch.randn(d, dtype=torch.float64))
    q = VonMisesFisher(mu.float(), torch.tensor(kappa), validate_args=True)
    z = q.sample((n,)).double()
    assert torch.allclose(z.norm(dim=-1), torch.ones((), dtype=z.dtype), atol=1e-5)
    cos = z @ mu
    length = float(q.mean_resultant_length)
    # the mean of mu.z is A_d(kappa), within 4 standard errors
    assert abs(float(cos.mean()) - length) < 4 * float(cos.std()) / n ** 0.5
    # the sample mean vector is A_d(kappa) mu, coordinate by coordinate within 5 standard errors
    se = z.std(0) / n ** 0.5
    assert ((z.mean(0) - length * mu).abs() < 5 * se + 1e-7).all()


def angle_cdf(d, kappa, points=400_001):
    """The exact CDF of the angle theta = arccos(mu.z) of vMF(mu, kappa) on S^(d-1), whose density
    is proportional to exp(kappa (cos theta - 1)) sin(theta)^(d-2) on [0, pi]: cumulative
    trapezoids on a fine grid in float64 (no endpoint singularity in theta, even at d = 2)."""
    theta = np.linspace(0.0, math.pi, points)
    log_h = kappa * (np.cos(theta) - 1)
    if d > 2:
        with np.errstate(divide="ignore"):
            log_h = log_h + (d - 2) * np.log(np.sin(theta))
    h = np.exp(log_h - log_h.max())
    cdf = np.concatenate([[0.0], np.cumsum((h[1:] + h[:-1]) / 2)])
    cdf /= cdf[-1]
    return lambda t: np.interp(t, theta, cdf)


def vmf_angles(d, kappa, n, seed, draw_kappa=None):
    """arccos(mu.z) of n draws of VonMisesFisher(mu, kappa) in float64 (``draw_kappa``: drawn at
    another concentration)."""
    torch.manual_seed(seed)
    mu = unit(torch.randn(d, dtype=torch.float64))
    q = VonMisesFisher(mu, torch.tensor(kappa if draw_kappa is None else draw_kappa, dtype=torch.float64))
    z = q.sample((n,))
    return torch.arccos((z @ mu).clamp(-1, 1)).numpy()


KS_CASES = [(2, 0.5), (3, 5.0), (10, 1.0), (10, 30.0), (50, 10.0), (5, 1000.0)]


@pytest.mark.parametrize("per_round", [8, 1])
@pytest.mark.parametrize("d,kappa", KS_CASES)
def test_the_samplers_angle_has_the_exact_vmf_marginal(d, kappa, per_round, monkeypatch):
    """The angle of the draws to mu, against the exact marginal (Kolmogorov-Smirnov, 20,000 draws,
    p > 1e-3): Wood's proposals drawn PROPOSALS_PER_ROUND at a time (8), or one at a time (1: about
    a third of the entries go on to further rounds, so the rounds after the first are tested too)."""
    from scipy.stats import kstest

    import pyrovae.distributions.vmf as vmf

    monkeypatch.setattr(vmf, "PROPOSALS_PER_ROUND", per_round)
    theta = vmf_angles(d, kappa, 20000, seed=d + per_round)
    assert kstest(theta, angle_cdf(d, kappa)).pvalue > 1e-3


def test_the_ks_check_of_the_sampler_has_teeth():
    """The check above rejects (p < 1e-6) draws from Wood's proposal without the acceptance test,
    and draws made at a concentration 10% off."""
    from scipy.stats import kstest

    from pyrovae.distributions.vmf_angle import wood_b

    d, kappa, n = 10, 30.0, 20000
    cdf = angle_cdf(d, kappa)
    torch.manual_seed(0)
    b = float(wood_b(torch.tensor(kappa, dtype=torch.float64), d))
    epsilon = torch.distributions.Beta(torch.tensor((d - 1) / 2.0), torch.tensor((d - 1) / 2.0)).sample((n,)).double()
    proposal_theta = (2 * torch.atan(torch.sqrt(b * epsilon / (1 - epsilon)))).numpy()
    assert kstest(proposal_theta, cdf).pvalue < 1e-6
    assert kstest(vmf_angles(d, kappa, n, seed=1, draw_kappa=1.1 * kappa), cdf).pvalue < 1e-6
    assert kstest(vmf_angles(d, kappa, n, seed=1), cdf).pvalue > 1e-3


def test_the_sampler_gives_up_after_its_limit_of_proposals(monkeypatch):
    import pyrovae.distributions.vmf as vmf

    q = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(5.0))
    monkeypatch.setattr(vmf, "MAX_REJECTION_ROUNDS", 16)
    monkeypatch.setattr(vmf.torch, "rand_like", lambda t: torch.full_like(t, 2.0))  # log 2 > 0: never accepted
    with pytest.raises(RuntimeError, match="did not finish in 16 proposals"):
        q._sample_epsilon(torch.full((4,), 5.0))


def test_batch_shapes_and_plates():
    loc = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    q = VonMisesFisher(loc, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    assert q.rsample((5,)).shape == (5, 4, 3)
    assert q.log_prob(q.rsample((5,))).shape == (5, 4)
    assert q.expand((2, 4)).rsample().shape == (2, 4, 3)
    assert VonMisesFisher(loc[0], torch.ones(2)).batch_shape == (2,)  # kappa broadcasts the batch

    def guide():
        with pyro.plate("particles", 7, dim=-2), pyro.plate("data", 4):
            return pyro.sample("z", q)

    z = guide()
    assert z.shape == (7, 4, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones((), dtype=z.dtype), atol=1e-5)
    with pytest.raises(ValueError, match="d >= 2"):
        VonMisesFisher(torch.ones(4, 1), torch.ones(4))


@pytest.mark.parametrize("d,kappa", [(2, 0.5), (3, 20.0), (10, 3.0), (1000, 1e4)])
def test_kl_to_uniform_matches_monte_carlo(d, kappa):
    torch.manual_seed(0)
    q = VonMisesFisher(unit(torch.randn(d)), torch.tensor(kappa, dtype=torch.float64))
    p = HypersphericalUniform(d, dtype=torch.float64)
    kl = torch.distributions.kl_divergence(q, p)
    n = 40000 if d < 1000 else 4000
    log_ratio = q.log_prob(q.sample((n,))) + p.log_normalizer  # log q - log p
    se = float(log_ratio.std()) / n ** 0.5
    assert abs(float(kl) - float(log_ratio.mean())) < 4 * se + 1e-12
    assert float(kl) >= 0
    assert float(q.entropy()) == pytest.approx(-float(log_ratio.mean()) + p.log_normalizer, abs=4 * se + 1e-12)


def test_large_concentration_and_dimension_in_float32():
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(3, 1000), dim=-1)
    kappa = torch.tensor([1.0, 300.0, 1e4], requires_grad=True)
    q = VonMisesFisher(loc, kappa)
    z = q.rsample((4,))
    values = [q.log_prob(z), q.entropy(), torch.distributions.kl_divergence(q, HypersphericalUniform(1000))]
    total = sum(v.sum() for v in values)
    total.backward()
    assert all(torch.isfinite(v).all() for v in values) and torch.isfinite(kappa.grad).all()
    # float32 and float64 agree on the log-density
    q64 = VonMisesFisher(torch.nn.functional.normalize(loc.double(), dim=-1), kappa.detach().double(), validate_args=False)
    assert torch.allclose(q.log_prob(z).double(), q64.log_prob(z.double()), rtol=1e-5, atol=0.05)
