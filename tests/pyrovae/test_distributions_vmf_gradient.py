"""The von Mises-Fisher's gradients: the implicit derivative of the angle in kappa against a
closed-form inverse CDF (d = 3) and finite differences of a numerically inverted CDF, and the
Monte Carlo gradient of rsample alone against closed forms (A_d'(kappa), E[(a.z)^2 + c.z]),
with Pyro's Trace_ELBO equal to the plain pathwise gradient."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from scipy import integrate, optimize

from pyrovae.distributions import HypersphericalUniform, VonMisesFisher, bessel_ratio
from pyrovae.distributions.vmf_angle import angle_gradient, implicit_angle, wood_b

F64 = torch.float64


def closed_form_angle_d3(u, kappa):
    """theta = F^{-1}(u; kappa) for d = 3, where F(theta) = (1 - e^{-kappa (1 - cos theta)}) / (1 - e^{-2 kappa})."""
    one_minus_w = -torch.log1p(-u * -torch.expm1(-2 * kappa)) / kappa
    return 2 * torch.asin(torch.sqrt(one_minus_w / 2))


@pytest.mark.parametrize("kappa", [0.01, 1.0, 100.0, 1e4])
def test_angle_gradient_matches_the_closed_form_inverse_cdf_in_3d(kappa):
    u = torch.tensor([1e-9, 1e-3, 0.3, 0.5, 0.9, 1 - 1e-6], dtype=F64)
    k = torch.tensor(kappa, dtype=F64, requires_grad=True)
    theta = closed_form_angle_d3(u, k)
    exact = torch.stack([torch.autograd.grad(t, k, retain_graph=True)[0] for t in theta])
    got = angle_gradient(theta.detach(), k.detach(), 3)
    assert torch.allclose(got, exact, rtol=1e-8, atol=0), (got, exact)


def inverse_cdf(u, kappa, d):
    """theta with F(theta; kappa) = u, by adaptive quadrature of h(theta) = e^{kappa (cos theta - 1)} sin^(d-2) theta."""
    mode = math.atan2(d - 2, kappa) if d > 2 else 0.0  # near the mode: kappa sin = (d-2) cot, roughly
    width = 1 / math.sqrt(kappa + d)
    points = sorted({min(math.pi, max(0.0, mode + j * width)) for j in range(-8, 9)} - {0.0, math.pi})
    log_h = lambda t: -2 * kappa * math.sin(t / 2) ** 2 + (d - 2) * math.log(max(math.sin(t), 1e-300))  # noqa: E731
    top = max(log_h(p) for p in points)
    h = lambda t: math.exp(log_h(t) - top)  # noqa: E731
    total = integrate.quad(h, 0, math.pi, points=points, epsabs=0, epsrel=1e-13, limit=200)[0]
    cdf = lambda t: integrate.quad(h, 0, t, points=[p for p in points if p < t], epsabs=0, epsrel=1e-13,  # noqa: E731
                                   limit=200)[0] / total - u
    return optimize.brentq(cdf, 1e-12, math.pi - 1e-12, xtol=1e-15, rtol=1e-15)


@pytest.mark.parametrize("d,kappa", [(2, 1.0), (10, 100.0), (50, 10.0), (1000, 1e4)])
def test_angle_gradient_matches_finite_differences_of_the_inverse_cdf(d, kappa):
    step = 1e-3 * kappa
    for u in (0.1, 0.5, 0.9):
        theta = inverse_cdf(u, kappa, d)
        fd = (inverse_cdf(u, kappa + step, d) - inverse_cdf(u, kappa - step, d)) / (2 * step)
        got = float(angle_gradient(torch.tensor(theta, dtype=F64), torch.tensor(kappa, dtype=F64), d))
        assert got == pytest.approx(fd, rel=1e-5), (u, got, fd)


def test_angle_gradient_is_finite_and_negative_out_in_the_tails():
    for d, kappa in [(2, 1e4), (3, 1e-2), (1000, 1e4), (1000, 1e-2)]:
        theta = torch.tensor([0.0, 1e-12, 1e-3, 1.0, 3.0, math.pi], dtype=F64)
        grad = angle_gradient(theta, torch.tensor(kappa, dtype=F64), d)
        assert torch.isfinite(grad).all() and (grad <= 0).all(), (d, kappa, grad)


def dA_dkappa(d, kappa):
    """A_d'(kappa) = 1 - A_d^2 - (d - 1) A_d / kappa."""
    a = float(bessel_ratio(d / 2 - 1, torch.tensor(kappa, dtype=F64)))
    return 1 - a * a - (d - 1) * a / kappa


def per_draw_kappa_gradients(d, kappa, n, implicit=True):
    """d(mu.z)/dkappa for n draws (one kappa per draw, so autograd returns each draw's term)."""
    mu = torch.nn.functional.normalize(torch.ones(d, dtype=F64), dim=0)
    k = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    if implicit:
        w = VonMisesFisher(mu, k).rsample() @ mu
    else:  # differentiating Wood's w = h(epsilon, kappa) at the accepted epsilon (biased)
        epsilon = VonMisesFisher(mu, k.detach())._sample_epsilon(k.detach())
        w = torch.cos(2 * torch.atan(torch.sqrt(wood_b(k, d) * epsilon / (1 - epsilon))))
    (grad,) = torch.autograd.grad(w.sum(), k)
    return grad


@pytest.mark.parametrize("d", [3, 10, 50])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0])
def test_rsample_alone_gives_the_derivative_of_the_mean_resultant_length(d, kappa):
    """d/dkappa E[mu.z] = A_d'(kappa) from rsample, within 2%. With 60000 draws the standard error
    is at most 0.5% of A_d' (asserted; 0.05-0.4% in these cases), so 2% is at least 4 of them."""
    torch.manual_seed(0)
    grad = per_draw_kappa_gradients(d, kappa, 60000)
    exact = dA_dkappa(d, kappa)
    mean, se = float(grad.mean()), float(grad.std()) / len(grad) ** 0.5
    assert se < 0.005 * exact
    assert abs(mean - exact) < 0.02 * exact, (mean, exact, se)
    assert abs(mean - exact) < 4.5 * se, (mean, exact, se)


def test_differentiating_the_proposal_map_at_a_fixed_proposal_is_biased():
    """The estimator this replaced: 8% off at d = 10, kappa = 5 (0.0565 against 0.0611)."""
    torch.manual_seed(0)
    grad = per_draw_kappa_gradients(10, 5.0, 40000, implicit=False)
    exact, se = dA_dkappa(10, 5.0), float(grad.std()) / len(grad) ** 0.5
    assert float(grad.mean()) == pytest.approx(0.0565, abs=0.001) and exact == pytest.approx(0.0611, abs=1e-4)
    assert abs(float(grad.mean()) - exact) > 20 * se


def expected_f(mu, kappa, a, c, d):
    """E[(a.z)^2 + c.z] in closed form: E[z z^T] = (A/kappa) I + (1 - d A/kappa) mu mu^T, E[z] = A mu."""
    A = bessel_ratio(d / 2 - 1, kappa)
    return (A / kappa) * (a @ a) + (1 - d * A / kappa) * (a @ mu) ** 2 + A * (c @ mu)


@pytest.mark.parametrize("d,kappa", [(2, 0.5), (3, 2.0), (5, 2.0), (10, 20.0)])
def test_rsample_gradient_is_unbiased_in_loc_and_kappa(d, kappa):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(d)
    a, c, raw = (torch.randn(d, generator=g, dtype=F64) for _ in range(3))
    raw.requires_grad_()
    k = torch.tensor(kappa, dtype=F64, requires_grad=True)
    exact = torch.cat([t.reshape(-1) for t in torch.autograd.grad(expected_f(raw / raw.norm(), k, a, c, d), [raw, k])])
    # the exact gradient (autograd through the closed form) against central finite differences
    h, mu = 1e-6, (raw / raw.norm()).detach()
    fd_k = (expected_f(mu, k.detach() + h, a, c, d) - expected_f(mu, k.detach() - h, a, c, d)) / (2 * h)
    assert float(fd_k) == pytest.approx(float(exact[-1]), abs=1e-6)
    estimates = []
    for _ in range(32):
        z = VonMisesFisher(raw / raw.norm(), k).rsample((3750,))
        f = ((z @ a) ** 2 + z @ c).mean()
        estimates.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(f, [raw, k])]))
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / 32 ** 0.5
    # 32 batches of 3750 draws (the standard error from 32 batches, so the ratio is nearly normal;
    # from 8 it is Student's t with 7 degrees of freedom, beyond 4.5 three times in a thousand):
    # within 4.5 standard errors of the exact gradient, for loc and kappa
    assert ((mean - exact).abs() < 4.5 * se + 1e-4).all(), (mean, exact, se)


def test_trace_elbo_gradient_is_the_pathwise_gradient_and_unbiased():
    """ELBO = E_q[f(z)] - KL(q || uniform), f a log-factor: Pyro's Trace_ELBO adds no score term
    (its gradient equals that of the plain pathwise estimate on the same draws) and is unbiased;
    TraceMeanField_ELBO, with the closed-form KL, accepts the guide and is unbiased too."""
    d = 3
    a = torch.tensor([1.0, -0.5, 0.3], dtype=F64)
    c = torch.tensor([0.2, 0.1, -1.0], dtype=F64)
    raw = torch.tensor([0.4, -0.3, 0.8], dtype=F64, requires_grad=True)
    k = torch.tensor(1.5, dtype=F64, requires_grad=True)
    uniform = HypersphericalUniform(d, dtype=F64)
    q = lambda: VonMisesFisher(raw / raw.norm(), k)  # noqa: E731

    def model():
        z = pyro.sample("z", uniform)
        pyro.factor("f", (z @ a) ** 2 + z @ c)

    def guide():
        pyro.sample("z", q())

    def grads(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [raw, k])])

    n = 20000
    elbo = Trace_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=0)
    pyro.set_rng_seed(1)
    theirs = grads(-elbo.differentiable_loss(model, guide))
    pyro.set_rng_seed(1)
    z = q().expand((n,)).rsample()
    ours = grads(((z @ a) ** 2 + z @ c + uniform.log_prob(z) - q().log_prob(z)).mean())
    assert torch.allclose(theirs, ours, rtol=1e-10, atol=1e-12), (theirs, ours)
    assert float(q().score_parts(z).score_function) == 0

    exact = grads(expected_f(raw / raw.norm(), k, a, c, d) - torch.distributions.kl_divergence(q(), uniform))
    for objective in (elbo, TraceMeanField_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=0)):
        estimates = torch.stack([grads(-objective.differentiable_loss(model, guide)) for _ in range(6)])
        mean, se = estimates.mean(0), estimates.std(0) / 6 ** 0.5
        assert ((mean - exact).abs() < 4.5 * se + 1e-4).all(), (type(objective).__name__, mean, exact, se)


def test_implicit_angle_gradient_flows_only_into_kappa_and_keeps_float32():
    torch.manual_seed(0)
    kappa = torch.tensor([1.0, 300.0, 1e4], requires_grad=True)
    epsilon = torch.rand(5, 3)
    theta = implicit_angle(epsilon, kappa.expand(5, 3), 1000)
    assert theta.dtype == torch.float32 and ((theta >= 0) & (theta <= math.pi)).all()
    theta.sum().backward()
    assert kappa.grad.dtype == torch.float32 and torch.isfinite(kappa.grad).all() and (kappa.grad < 0).all()


def test_the_angle_gradient_with_the_distributions_shared_bessel_ratio_is_the_same():
    """The vMF hands its A_d(kappa) (from the normalizer's Bessel evaluation) to the implicit
    angle's backward pass; the gradient is the one computed there afresh."""
    from pyrovae.distributions import bessel_ratio

    kappa = torch.tensor([0.3, 2.0, 40.0], requires_grad=True)
    epsilon = torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.4]])
    grads = []
    for ratio in (None, bessel_ratio(4.0, kappa.detach().double())):
        (g,) = torch.autograd.grad(implicit_angle(epsilon, kappa.expand(2, 3), 10, ratio).sum(), kappa)
        grads.append(g)
    assert torch.equal(grads[0], grads[1])
