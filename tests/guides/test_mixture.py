"""The mixture-of-diagonal-Gaussians guide: Graves' pathwise gradients through the mixture
against the exact gradient of a closed-form expectation, the sampler's moments, the density,
the particle plate, and training."""


import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyrovae.distributions import DiagNormalMixture
from pyrovae.guides import MixtureGuide
from pyrovae.models import VAE

from tests.contract import binary_data, check_trains_and_improves


def expected_quadratic(loc, scale, logits, a, c):
    """E[sum_d a_d z_d^2 + c_d z_d] under the mixture, summed over the batch (closed form)."""
    weights = logits.softmax(-1).unsqueeze(-1)  # (B, K, 1)
    return (weights * (a * (loc ** 2 + scale ** 2) + c * loc)).sum()


def mixture_parameters(z_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(2, 3, z_dim, generator=g, dtype=torch.float64).requires_grad_()
    scale = (0.5 + torch.rand(2, 3, z_dim, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()
    a = torch.randn(z_dim, generator=g, dtype=torch.float64)
    c = torch.randn(z_dim, generator=g, dtype=torch.float64)
    return [loc, scale, logits], a, c


def flat(grads):
    return torch.cat([t.reshape(-1) for t in grads])


@pytest.mark.parametrize("z_dim", [1, 3])
def test_pathwise_gradient_matches_the_exact_gradient(z_dim):
    params, a, c = mixture_parameters(z_dim)
    exact = flat(torch.autograd.grad(expected_quadratic(*params, a, c), params))
    assert exact[-6:].abs().min() > 1e-2  # the logits' gradient is far from zero

    # the closed form's autograd gradient against central finite differences of it
    h, offset = 1e-6, 0
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                base = p.view(-1)[i].item()
                p.view(-1)[i] = base + h
                up = expected_quadratic(*params, a, c)
                p.view(-1)[i] = base - h
                down = expected_quadratic(*params, a, c)
                p.view(-1)[i] = base
                assert float((up - down) / (2 * h)) == pytest.approx(float(exact[offset + i]), abs=1e-6)
            offset += p.numel()

    # pathwise Monte Carlo, 16 batches of 2000 draws: every coordinate within 4.5 standard errors
    torch.manual_seed(0)
    estimates = []
    for _ in range(16):
        z = DiagNormalMixture(*params).rsample((2000,))  # (S, 2, Z)
        estimates.append(flat(torch.autograd.grad((a * z ** 2 + c * z).sum() / 2000, params)))
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / 4
    assert ((mean - exact).abs() < 4.5 * se + 1e-4).all(), ((mean - exact) / se)


def test_samples_have_the_mixture_moments_and_values_are_untouched_by_the_gradient_term():
    params, _, _ = mixture_parameters(3, seed=1)
    q = DiagNormalMixture(*params)
    torch.manual_seed(0)
    z = q.rsample((40000,))
    torch.manual_seed(0)
    with torch.no_grad():
        z_plain = q.rsample((40000,))
    assert torch.equal(z.detach(), z_plain)  # the implicit-gradient shift is exactly zero
    se_mean = (q.variance / 40000).sqrt()
    assert ((z.detach().mean(0) - q.mean).abs() < 4.5 * se_mean).all()
    assert torch.allclose(z.detach().var(0), q.variance.detach(), rtol=0.05)


def test_density_is_the_mixture_of_gaussians_and_matches_pyro():
    params, _, _ = mixture_parameters(3, seed=2)
    loc, scale, logits = (p.detach() for p in params)
    q = DiagNormalMixture(loc, scale, logits)
    z = torch.randn(7, 2, 3, dtype=torch.float64)
    components = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))  # (7, 2, K)
    manual = torch.logsumexp(components + logits.log_softmax(-1), -1)
    assert torch.allclose(q.log_prob(z), manual, atol=1e-12)
    assert torch.allclose(q.log_prob(z), dist.MixtureOfDiagNormals(loc, scale, logits).log_prob(z), atol=1e-10)


def test_guide_encodes_a_mixture_and_works_under_the_particle_plate():
    torch.manual_seed(0)
    guide = MixtureGuide(12, 3, (16,), num_components=4)
    q = guide.encode(binary_data(5))
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert q.loc.shape == (5, 4, 3) and q.logits.shape == (5, 4) and (q.scale > 0).all()
    with pyro.plate("particles", 6, dim=-2):
        trace = poutine.trace(guide).get_trace(binary_data(5))
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    assert z.shape == (6, 5, 3) and trace.nodes["z"]["log_prob"].shape == (6, 5)
    assert (z[0] != z[1]).all()  # distinct particles, not one draw broadcast
    z.sum().backward()
    assert guide.encoder[-1].weight.grad[:4].abs().sum() > 0  # the logits rows get a gradient


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_and_evaluates(objective):
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), MixtureGuide(12, 3, (16,), num_components=3)
    check_trains_and_improves(model, guide, objective)