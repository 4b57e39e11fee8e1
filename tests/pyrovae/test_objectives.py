"""Bounds against closed forms on the linear-Gaussian model, and against Pyro's own ELBOs."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from pyrovae import log_likelihood, log_weights
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import LinearGaussianVAE
from pyrovae.infer.objectives import ELBO, IWAE, MeanFieldELBO, RenyiBound, make_objective, objective_record


class ShiftedGuide(torch.nn.Module):
    """The exact posterior with its mean shifted and its scale inflated: a known, imperfect guide."""

    def __init__(self, model, shift=0.5, inflate=1.5):
        super().__init__()
        self.model, self.shift, self.inflate = model, shift, inflate
        self.loc_offset = torch.nn.Parameter(torch.zeros(model.z_dim))

    def forward(self, x):
        post = self.model.posterior(x)
        scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * self.inflate
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post.loc + self.shift + self.loc_offset, scale).to_event(1))


def exact_guide(model):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", model.posterior(x))

    return guide


@pytest.fixture
def linear():
    torch.manual_seed(1)
    model = LinearGaussianVAE(x_dim=4, z_dim=2, init_scale=0.7)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    x = model(num_samples=200).detach()
    return model, x


def test_exact_posterior_gives_exact_log_likelihood_for_any_k(linear):
    model, x = linear
    exact = model.log_marginal(x)
    log_w = log_weights(model, exact_guide(model), {"x": x}, num_particles=3).detach()
    # with q = p(z|x), every weight is p(x): zero variance
    assert torch.allclose(log_w, exact.expand(3, -1), atol=1e-4)


def test_bounds_are_ordered_and_rise_with_k(linear):
    model, x = linear
    guide = ShiftedGuide(model)
    exact = model.log_marginal(x).mean().item()
    estimates = {k: log_likelihood(model, guide, x, num_samples=k).log_likelihood for k in (1, 10, 100, 2000)}
    elbo = log_likelihood(model, guide, x, num_samples=2000).elbo
    assert elbo < estimates[1] + 0.05  # K=1 is an unbiased ELBO estimate
    assert estimates[1] < estimates[10] < estimates[100] < estimates[2000] <= exact + 0.02
    assert exact - estimates[2000] < 0.05, (estimates, exact)
    assert exact - elbo > 0.2  # the guide is visibly imperfect, so the test can fail


def test_log_likelihood_reports_stderr_and_ess(linear):
    model, x = linear
    est = log_likelihood(model, exact_guide(model), x, num_samples=50, batch_size=64, max_pass=100)
    per = model.log_marginal(x).double()
    assert est.per_datapoint.shape == (200,)
    assert torch.allclose(est.per_datapoint, per, atol=1e-4)
    assert est.stderr == pytest.approx(float(per.detach().std() / math.sqrt(200)), rel=1e-3)
    assert torch.allclose(est.ess, torch.full((200,), 50.0), rtol=1e-3)  # equal weights


def test_meanfield_and_sampled_elbo_agree_in_expectation(linear):
    model, x = linear
    guide = ShiftedGuide(model)
    batch = {"x": x}
    analytic = torch.stack([MeanFieldELBO()(model, guide, batch).detach() for _ in range(400)])
    sampled = torch.stack([ELBO()(model, guide, batch).detach() for _ in range(400)])
    stderr = (analytic.var() / 400 + sampled.var() / 400).sqrt().item()
    assert abs(sampled.mean().item() - analytic.mean().item()) < 4 * stderr
    # the analytic KL removes the KL term's sampling noise
    assert analytic.std() < sampled.std()
    # and both estimate the same bound as the per-datapoint log-weights
    elbo = -log_likelihood(model, guide, x, num_samples=2000).elbo
    assert abs(analytic.mean().item() - elbo) < 4 * stderr + 0.01


def test_elbo_matches_pyro_trace_elbo_per_datapoint(linear):
    model, x = linear
    guide = ShiftedGuide(model)
    pyro.set_rng_seed(3)
    ours = ELBO()(model, guide, {"x": x})
    pyro.set_rng_seed(3)
    theirs = Trace_ELBO().differentiable_loss(model, guide, x=x) / len(x)
    assert torch.allclose(ours, theirs)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_renyi_matches_pyro_renyi_elbo_loss_and_gradients(linear, alpha):
    model, x = linear
    guide = ShiftedGuide(model)
    x = x[:20]
    objective = RenyiBound(alpha=alpha, num_particles=7)
    pyro.set_rng_seed(5)
    loss = objective(model, guide, {"x": x}) * len(x)
    params = [guide.loc_offset, model.weight]
    ours = torch.autograd.grad(loss, params)
    pyro.set_rng_seed(5)
    renyi = RenyiELBO(alpha=alpha, num_particles=7, vectorize_particles=True, max_plate_nesting=1)
    pyro_loss = renyi.loss_and_grads(model, guide, x=x)
    assert loss.item() == pytest.approx(pyro_loss, rel=1e-5)
    for p, g in zip(params, ours):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-5)


def test_iwae_takes_logsumexp_per_datapoint_not_over_the_batch(linear):
    model, x = linear
    guide = ShiftedGuide(model)
    x = x[:10]
    pyro.set_rng_seed(2)
    loss = IWAE(num_particles=5)(model, guide, {"x": x})
    pyro.set_rng_seed(2)
    log_w = log_weights(model, guide, {"x": x}, num_particles=5)  # (5, 10)
    per_datapoint = torch.logsumexp(log_w, 0) - math.log(5)
    over_batch = torch.logsumexp(log_w.sum(1), 0) - math.log(5)
    assert log_w.shape == (5, 10)
    assert loss.item() == pytest.approx(-per_datapoint.mean().item(), rel=1e-6)
    assert abs(loss.item() + over_batch.item() / 10) > 1e-3


def test_beta_scales_exactly_the_kl(linear):
    model, x = linear
    guide = ShiftedGuide(model)
    batch = {"x": x}
    kl = torch.distributions.kl_divergence(
        dist.Normal(model.posterior(x).loc + 0.5,
                    model.posterior(x).covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * 1.5).to_event(1),
        dist.Normal(torch.zeros(2), 1.0).to_event(1),
    ).mean()
    pyro.set_rng_seed(0)
    full = MeanFieldELBO()(model, guide, batch)
    pyro.set_rng_seed(0)
    half = MeanFieldELBO(beta=0.5)(model, guide, batch)
    assert (full - half).item() == pytest.approx(0.5 * kl.item(), rel=1e-4)


def test_kl_warmup_is_linear_then_flat():
    objective = ELBO(beta=2.0, warmup_steps=4)
    assert [objective.kl_weight(s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert objective.kl_weight(None) == 2.0
    assert ELBO().kl_weight(0) == 1.0


def test_objective_errors_and_registry():
    with pytest.raises(ValueError, match="alpha = 1"):
        RenyiBound(alpha=1.0)
    with pytest.raises(ValueError, match="num_particles"):
        IWAE(num_particles=0)
    with pytest.raises(ValueError, match="beta"):
        ELBO(beta=-1)
    with pytest.raises(ValueError, match="unknown objective 'nope'.*iwae"):
        make_objective("nope")
    assert make_objective("iwae", num_particles=3).num_particles == 3
    assert objective_record(make_objective("iwae", num_particles=3)) == {
        "name": "iwae", "beta": 1.0, "warmup_steps": 0, "num_particles": 3, "particle_chunk": 0, "gradient": "plain"}


def test_iwae_rejects_non_reparameterized_guides():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(p))

    with pytest.raises(NotImplementedError, match="rsample"):
        IWAE(num_particles=2)(model, guide, {"x": torch.zeros(3)})


def closed_form_elbo(model, x, loc, scale):
    """E_q[log N(x; W z + b, s^2 I)] - KL(q || N(0, I)) per datapoint, for q = N(loc, diag scale^2)."""
    s2 = model.noise_scale ** 2
    resid = x - loc @ model.weight.T - model.bias
    spread = (scale ** 2 * (model.weight ** 2).sum(0)).sum(-1)  # tr(W diag(scale^2) W^T)
    expected_log_lik = -0.5 * x.shape[-1] * torch.log(2 * math.pi * s2) - (resid.pow(2).sum(-1) + spread) / (2 * s2)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(-1)
    return (expected_log_lik - kl).detach()


def test_multi_particle_elbo_is_pyros_vectorized_trace_elbo_per_datapoint(linear):
    """K particles: the same loss and gradients as Trace_ELBO(num_particles=K) at the same seed;
    its mean over seeds is the closed-form ELBO and its spread that of one particle / sqrt(K)."""
    model, x = linear
    guide = ShiftedGuide(model)
    x = x[:30]
    params = [guide.loc_offset, model.weight]
    pyro.set_rng_seed(4)
    ours = ELBO(num_particles=8)(model, guide, {"x": x})
    ours_grads = torch.autograd.grad(ours, params)
    pyro.set_rng_seed(4)
    theirs = Trace_ELBO(num_particles=8, vectorize_particles=True).differentiable_loss(model, guide, x=x) / len(x)
    theirs_grads = torch.autograd.grad(theirs, params)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b)

    post = model.posterior(x)
    scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * 1.5
    exact = -closed_form_elbo(model, x, post.loc + 0.5, scale).mean().item()
    with torch.no_grad():
        eight = torch.stack([ELBO(num_particles=8)(model, guide, {"x": x}) for _ in range(200)])
        one = torch.stack([ELBO()(model, guide, {"x": x}) for _ in range(200)])
    assert abs(eight.mean().item() - exact) < 4 * eight.std().item() / math.sqrt(200)
    assert abs(one.mean().item() - exact) < 4 * one.std().item() / math.sqrt(200)
    ratio = (eight.std() / one.std()).item()                    # 1 / sqrt(8) = 0.354
    assert 0.27 < ratio < 0.45, ratio


def point_guide(z0):
    """q(z | x) = a point mass at ``z0`` (N, z_dim): log q = 0, and every particle is z0."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z0, event_dim=1))

    return guide


POINT_OBJECTIVES = [
    ("elbo", {}), ("elbo", {"num_particles": 3}), ("meanfield", {}), ("iwae", {"num_particles": 4}),
    ("renyi", {"alpha": 0.5, "num_particles": 4}), ("iwae", {"num_particles": 6, "particle_chunk": 4}),
    ("free-bits", {}),
]


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("name, options", POINT_OBJECTIVES)
def test_every_objective_weights_the_latent_terms_by_beta_and_warmup_in_closed_form(linear, name, options, validate):
    """With q = a point mass at z0 every bound is the same closed form, whatever K and alpha:
    log p(x | z0) + w log p(z0), with w = beta * min(1, (step + 1) / warmup_steps) (the KL weight;
    log q = 0). Dropping beta or the warm-up from any objective changes the value."""
    model, x = linear
    x = x[:12]
    z0 = torch.linspace(-1.5, 1.5, 24).reshape(12, 2)
    log_lik = dist.Normal(z0 @ model.weight.T + model.bias, model.noise_scale).log_prob(x).sum(-1)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z0).sum(-1)
    assert (log_prior.abs() > 0.5).all()   # so that a wrong weight shows
    for beta, warmup, step, weight in ((1.0, 0, None, 1.0), (0.3, 0, 5, 0.3), (2.0, 4, 0, 0.5), (2.0, 4, 2, 1.5),
                                       (2.0, 4, 9, 2.0), (2.0, 4, None, 2.0)):
        objective = make_objective(name, beta=beta, warmup_steps=warmup, **options)
        with pyro.validation_enabled(validate):
            loss = objective(model, point_guide(z0), {"x": x}, step)
        expected = -(log_lik + weight * log_prior).mean()
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-5,
                                   msg=f"{name} beta={beta} warmup={warmup} step={step}")


class RecordingGuide(ShiftedGuide):
    """ShiftedGuide that keeps its draws and its distribution, to recompute a bound by hand."""

    draws = ()

    def forward(self, x):
        post = self.model.posterior(x)
        scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * self.inflate
        self.q = dist.Normal(post.loc + self.shift + self.loc_offset, scale).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.q)
        self.draws = [*self.draws, z.reshape(-1, *z.shape[-2:])]  # (particles, N, z_dim) per call
        return z


@pytest.mark.parametrize("validate, chunk", [(True, 0), (False, 0), (False, 2)])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_importance_weighted_bounds_with_beta_and_warmup_match_a_hand_computation(linear, alpha, validate, chunk):
    """The Renyi/IWAE bound with KL weight w, per datapoint, from the guide's own K draws:
    1/(1-alpha) log 1/K sum_k exp((1-alpha) [log p(x|z_k) + w (log p(z_k) - log q(z_k|x))]).
    (With particle chunks the K draws come in calls of 2, 2 and 1 particles.)"""
    model, x = linear
    x = x[:10]
    guide = RecordingGuide(model)
    objective = RenyiBound(alpha=alpha, num_particles=5, particle_chunk=chunk, beta=2.0, warmup_steps=8)
    objective(model, guide, {"x": x})   # the first call also runs the guide once to count its plates
    for step, weight in ((1, 0.5), (5, 1.5), (100, 2.0)):
        guide.draws = []
        with pyro.validation_enabled(validate):
            loss = objective(model, guide, {"x": x}, step)
        z = torch.cat(guide.draws).detach()                                      # (5, 10, 2)
        assert z.shape == (5, 10, 2) and len(guide.draws) == (3 if chunk else 1)
        log_lik = dist.Normal(z @ model.weight.T + model.bias, model.noise_scale).log_prob(x).sum(-1)
        log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_w = log_lik + weight * (log_prior - guide.q.log_prob(z))               # (5, 10)
        one_minus = 1.0 - alpha
        bound = (torch.logsumexp(one_minus * log_w, 0) - math.log(5)) / one_minus
        torch.testing.assert_close(loss, -bound.mean().detach(), rtol=1e-5, atol=1e-5, msg=f"step={step}")


def plain_linear_pair(model, size):
    """The linear-Gaussian model and its shifted guide as plain functions over ``pyro.plate("data",
    size)``: ``size=None`` is the same program with a plate without a size (Pyro then takes the
    plate's size from the sites' distributions, as Pyro's examples/cvae does)."""

    def plate(x):
        return pyro.plate("data") if size is None else pyro.plate("data", size(x))

    def pair_model(x):
        with plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], model.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ model.weight.T + model.bias, model.noise_scale).to_event(1), obs=x)

    def pair_guide(x, exact=False):
        post = model.posterior(x)
        with plate(x):
            if exact:
                pyro.sample("z", post)
            else:
                scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * 1.5
                pyro.sample("z", dist.Normal(post.loc + 0.5, scale).to_event(1))

    return pair_model, pair_guide


def test_a_plate_without_a_size_gives_the_numbers_of_the_sized_plate(linear):
    model, x = linear
    estimates, bounds = {}, {}
    for name, size in (("sized", lambda x: x.shape[0]), ("unsized", None)):
        pair_model, pair_guide = plain_linear_pair(model, size)
        pyro.set_rng_seed(0)
        bounds[name] = IWAE(num_particles=4)(pair_model, pair_guide, {"x": x})
        pyro.set_rng_seed(0)  # 200 datapoints in passes of 64 (the last one 8): the plate follows each pass
        estimates[name] = log_likelihood(pair_model, pair_guide, x, num_samples=100, batch_size=64)
        exact = log_likelihood(pair_model, lambda x: pair_guide(x, exact=True), x, num_samples=5)
        assert torch.allclose(exact.per_datapoint, model.log_marginal(x).double(), atol=1e-4)
    assert torch.equal(estimates["sized"].per_datapoint, estimates["unsized"].per_datapoint)
    assert estimates["sized"].elbo == estimates["unsized"].elbo
    assert torch.equal(bounds["sized"], bounds["unsized"])  # the objectives read the same plate
    assert model.log_marginal(x).mean().item() - estimates["unsized"].log_likelihood > 0  # an imperfect guide


def test_a_draw_shared_by_the_batch_in_a_plate_without_a_size_is_reported(linear):
    model, x = linear
    pair_model, pair_guide = plain_linear_pair(model, None)

    def shared_guide(x):  # one z for the whole batch: no per-datapoint weight exists
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal(x.new_zeros(model.z_dim), 1.0).to_event(1))

    def shared_prior(x):  # the model draws one z for the batch, whatever the guide draws
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x.new_zeros(model.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ model.weight.T + model.bias, model.noise_scale).to_event(1), obs=x)

    for pair in ((pair_model, shared_guide), (shared_prior, pair_guide)):
        with pytest.raises(ValueError, match=r"site 'z' has 1 entries along the data plate, not one per "
                                             r"datapoint of the batch \(64\).*pyro.plate\('data', x.shape\[0\]\)"):
            log_likelihood(*pair, x, num_samples=10, batch_size=64)
    assert log_likelihood(pair_model, pair_guide, x[:1], num_samples=10).per_datapoint.shape == (1,)
