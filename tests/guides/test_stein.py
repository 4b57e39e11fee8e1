"""Amortized SVGD: the direction against Pyro's SVGD and a hand-written reference, the
surrogate's value and gradients, the conjugate normal-normal posterior, the Gaussian density
for evaluation, and training."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVGD, RBFSteinKernel

from pyrovae.guides import DiagNormalGuide, SteinGuide
from pyrovae.models import VAE
from pyrovae.infer.objectives import make_objective
from pyrovae.infer.stein import SteinObjective, svgd_direction

from tests.contract import binary_data, check_trains_and_improves


MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)


def gaussian_score(z):
    return -(z - MU) @ torch.linalg.inv(COV)  # COV is symmetric


def test_direction_matches_pyro_svgd_step():
    """Pyro's SVGD (multivariate mode, RBFSteinKernel) moves particles by phi under SGD(lr=1)."""
    torch.manual_seed(0)
    particles = torch.randn(9, 2, dtype=torch.float64) * 1.5

    def model():
        pyro.sample("z", dist.MultivariateNormal(MU, COV))

    svgd = SVGD(model, RBFSteinKernel(), pyro.optim.SGD({"lr": 1.0}), num_particles=9, max_plate_nesting=0,
                mode="multivariate")
    svgd.guide()  # creates the particles
    store = pyro.get_param_store()
    with torch.no_grad():
        store.get_param("svgd_particles").unconstrained().copy_(particles.reshape(-1))
    svgd.step()
    moved = store.get_param("svgd_particles").detach().reshape(9, 2) - particles
    ours = svgd_direction(particles[None], gaussian_score(particles)[None], "median_per_dim", leave_one_out=False)[0]
    assert torch.allclose(ours, moved, atol=1e-10)


def reference_direction(z, score, leave_one_out):
    """phi_i = mean_j [k(z_j, z_i) score_j + grad_{z_j} k(z_j, z_i)], isotropic median bandwidth, by autograd."""
    m = len(z)
    pairs = [float(((z[i] - z[j]) ** 2).sum()) for i in range(m) for j in range(i + 1, m)]
    h = torch.tensor(pairs).median().item() / math.log(m + 1)
    phi = torch.zeros_like(z)
    for i in range(m):
        for j in range(m):
            if leave_one_out and i == j:
                continue
            zj = z[j].clone().requires_grad_()
            k = torch.exp(-((zj - z[i]) ** 2).sum() / h)
            (grad_k,) = torch.autograd.grad(k, zj)
            phi[i] += k.detach() * score[j] + grad_k
    return phi / (m - 1 if leave_one_out else m)


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_direction_matches_a_hand_written_reference(leave_one_out):
    torch.manual_seed(1)
    z = torch.randn(3, 6, 2, dtype=torch.float64)  # three independent sets (datapoints)
    score = gaussian_score(z)
    ours = svgd_direction(z, score, "median", leave_one_out)
    for b in range(3):
        assert torch.allclose(ours[b], reference_direction(z[b], score[b], leave_one_out), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 particles"):
        svgd_direction(z[:, :1], score[:, :1])


SIGMA = 0.5


def normal_normal(x):
    """z ~ N(0, I_2), x | z ~ N(z, SIGMA^2 I): the posterior is N(x / (1 + SIGMA^2), SIGMA^2 / (1 + SIGMA^2))."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, SIGMA).to_event(1), obs=x)


def train_conjugate(leave_one_out, steps=400):
    pyro.set_rng_seed(0)
    x = torch.randn(16, 2) * 1.5
    guide = SteinGuide(2, 2, (), density_particles=256)  # z = W x + V xi + b: contains the posterior
    objective = SteinObjective(num_particles=8, leave_one_out=leave_one_out)
    optimizer = torch.optim.Adam(guide.parameters(), lr=0.02)
    for step in range(steps):
        if step == steps // 2:
            optimizer.param_groups[0]["lr"] = 0.002
        loss = objective(normal_normal, guide, {"x": x}, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z = guide.particles(x, 20000)
    return x, z


def test_particles_approach_the_conjugate_posterior():
    x, z = train_conjugate(leave_one_out=True)
    post_mean, post_var = x / (1 + SIGMA ** 2), SIGMA ** 2 / (1 + SIGMA ** 2)
    assert (z.mean(0) - post_mean).abs().max() < 0.05  # posterior sd 0.45
    ratio = z.var(0) / post_var
    assert ((ratio > 0.85) & (ratio < 1.1)).all(), ratio


def test_the_papers_direction_shrinks_the_posterior_of_iid_particles():
    """With the self-term (the sum over all j) the same encoder settles at under 0.6 of the variance."""
    x, z = train_conjugate(leave_one_out=False)
    assert (z.mean(0) - x / (1 + SIGMA ** 2)).abs().max() < 0.05
    assert (z.var(0) / (SIGMA ** 2 / (1 + SIGMA ** 2)) < 0.6).all()


def test_surrogate_value_and_gradients():
    """Value: minus the mean log joint of the particles; encoder gradient: -mean_i J_i^T phi_i;
    decoder gradient: minus the gradient of the mean log joint."""
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), SteinGuide(12, 3, (16,))
    x = binary_data(8)
    objective = SteinObjective(num_particles=4)
    objective(model, guide, {"x": x}, 0)  # the first call also traces the pair once (plate nesting)
    model.zero_grad(), guide.zero_grad()
    pyro.set_rng_seed(3)
    loss = objective(model, guide, {"x": x}, 0)
    loss.backward()

    pyro.set_rng_seed(3)
    z = guide.particles(x, 4)  # the same draws
    z_leaf = z.detach().requires_grad_()
    trace = poutine.trace(poutine.condition(model, data={"z": z_leaf})).get_trace(x)
    log_joint = (model.prior(8).log_prob(z_leaf) + model.likelihood(z_leaf).log_prob(x)).sum()
    assert loss.item() == pytest.approx(-log_joint.item() / 32, rel=1e-6)
    assert trace.log_prob_sum().item() == pytest.approx(log_joint.item(), rel=1e-6)
    (score,) = torch.autograd.grad(log_joint, z_leaf, retain_graph=True)
    phi = svgd_direction(z_leaf.detach().transpose(0, 1), score.transpose(0, 1), leave_one_out=True).transpose(0, 1)
    encoder = list(guide.parameters())
    expected = torch.autograd.grad(-(z * phi).sum() / 32, encoder)
    for p, g in zip(encoder, expected):
        assert torch.allclose(p.grad, g, atol=1e-6)
    decoder = list(model.parameters())
    expected = torch.autograd.grad(-log_joint / 32, decoder)
    for p, g in zip(decoder, expected):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_density_for_evaluation_is_the_gaussian_of_the_particles():
    torch.manual_seed(0)
    guide = SteinGuide(12, 3, (16,), density_particles=50)
    x = binary_data(5)
    pyro.set_rng_seed(2)
    q = guide.encode(x)
    pyro.set_rng_seed(2)
    z = guide.particles(x, 50)
    assert torch.allclose(q.base_dist.loc, z.mean(0)) and torch.allclose(q.base_dist.scale, z.std(0))
    with pyro.plate("particles", 7, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (7, 5, 3)


def test_objective_options_and_a_guide_without_particles():
    with pytest.raises(ValueError, match="num_particles >= 2"):
        SteinObjective(num_particles=1)
    with pytest.raises(ValueError, match="bandwidth"):
        SteinObjective(bandwidth="silverman")
    assert make_objective("stein").options.leave_one_out is True
    # any reparameterized guide can supply the particles (here a Gaussian encoder)
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), DiagNormalGuide(12, 3, (16,))
    loss = make_objective("stein", num_particles=3)(model, guide, {"x": binary_data(8)}, 0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in guide.parameters())


@pytest.mark.parametrize("objective", ["stein", "iwae"])
def test_trains_and_evaluates(objective):
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), SteinGuide(12, 3, (16,), density_particles=16)
    check_trains_and_improves(model, guide, objective)