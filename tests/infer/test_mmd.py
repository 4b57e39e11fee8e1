"""The InfoVAE / MMD objective: the unbiased MMD estimator against closed forms (two Gaussians,
Gaussian kernel: Gaussian integrals; inverse multiquadric in one dimension: quadrature), its
unbiasedness (mean of many small-sample estimates, in standard errors), the objective's
reduction to the ELBO and its formula by hand on the same draws, any pair's sites, and
training from the command line."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.mmd import InfoVAE, kernel_matrix, mmd_u, per_datapoint_values
from pyrovae.infer.objectives import ELBO, MeanFieldELBO, objective_record
from pyrovae.models import VAE
from pyrovae.models.linear import LinearGaussianVAE
from pyrovae.registry import get_objective

from tests.cli.helpers import pyrovae


def expected_rbf(m, S, s):
    """E exp(-|u|^2 / s) for u ~ N(m, S): det(I + 2 S / s)^(-1/2) exp(-m^T (S + s/2 I)^-1 m / 2)."""
    eye = torch.eye(len(m), dtype=torch.float64)
    return torch.linalg.det(eye + 2 * S / s) ** -0.5 * torch.exp(-0.5 * m @ torch.linalg.solve(S + s / 2 * eye, m))


def rbf_mmd2(mu_x, S_x, mu_y, S_y, s):
    """The population MMD^2 of N(mu_x, S_x) and N(mu_y, S_y) under exp(-|a - b|^2 / s)."""
    zero = torch.zeros_like(mu_x)
    return expected_rbf(zero, 2 * S_x, s) + expected_rbf(zero, 2 * S_y, s) - 2 * expected_rbf(mu_x - mu_y, S_x + S_y, s)


def expected_imq_1d(m, v, s):
    """E s / (s + u^2) for u ~ N(m, v) in one dimension, by quadrature on a fine grid."""
    u = torch.linspace(m - 14 * v ** 0.5, m + 14 * v ** 0.5, 200001, dtype=torch.float64)
    density = torch.exp(-0.5 * (u - m) ** 2 / v) / math.sqrt(2 * math.pi * v)
    return torch.trapezoid(density * s / (s + u ** 2), u)


def gaussians(dim=2):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    S_x = A @ A.T / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
    return torch.full((dim,), 0.7, dtype=torch.float64), S_x, torch.zeros(dim, dtype=torch.float64), \
        torch.eye(dim, dtype=torch.float64)


def draws(mu, S, shape, seed):
    return dist.MultivariateNormal(mu, S).sample(shape) if seed is None else \
        (torch.manual_seed(seed), dist.MultivariateNormal(mu, S).sample(shape))[1]


def test_the_closed_form_itself_against_a_large_sample():
    mu_x, S_x, mu_y, S_y = gaussians()
    x, y = draws(mu_x, S_x, (2000,), 1), draws(mu_y, S_y, (2000,), 2)
    s = 3.0
    by_sample = kernel_matrix(x, x, "rbf", s).mean() + kernel_matrix(y, y, "rbf", s).mean() \
        - 2 * kernel_matrix(x, y, "rbf", s).mean()
    assert abs(by_sample - rbf_mmd2(mu_x, S_x, mu_y, S_y, s)) < 0.01


@pytest.mark.parametrize("n, m", [(3, 3), (4, 7)])
def test_rbf_estimator_is_unbiased_against_the_closed_form(n, m):
    """The mean of 40000 estimates from n and m draws is the closed-form MMD^2 within 4
    standard errors; the plug-in (biased, diagonal kept) estimate is many errors off."""
    mu_x, S_x, mu_y, S_y = gaussians()
    s, reps = 4.0, 40000
    x, y = draws(mu_x, S_x, (reps, n), 3), draws(mu_y, S_y, (reps, m), 4)
    estimates = mmd_u(x, y, "rbf", s)
    assert estimates.shape == (reps,)
    truth = rbf_mmd2(mu_x, S_x, mu_y, S_y, s)
    se = estimates.std() / math.sqrt(reps)
    assert abs(estimates.mean() - truth) < 4 * se, (float(estimates.mean()), float(truth), float(se))
    biased = kernel_matrix(x, x, "rbf", s).mean((-1, -2)) + kernel_matrix(y, y, "rbf", s).mean((-1, -2)) \
        - 2 * kernel_matrix(x, y, "rbf", s).mean((-1, -2))
    assert abs(biased.mean() - truth) > 20 * se


def test_equal_distributions_give_zero_in_expectation_and_negative_estimates():
    mu, S, _, _ = gaussians()
    reps = 40000
    for kernel in ("rbf", "imq"):
        estimates = mmd_u(draws(mu, S, (reps, 5), 5), draws(mu, S, (reps, 5), 6), kernel)
        se = estimates.std() / math.sqrt(reps)
        assert abs(estimates.mean()) < 4 * se
        assert (estimates < 0).float().mean() > 0.3  # an unbiased estimate of 0 is negative often


def test_imq_estimator_is_unbiased_against_quadrature():
    """One dimension, X ~ N(1, 0.5), Y ~ N(0, 1), k = s / (s + (a - b)^2)."""
    s, reps = 2.0, 40000
    truth = expected_imq_1d(0.0, 1.0, s) + expected_imq_1d(0.0, 2.0, s) - 2 * expected_imq_1d(1.0, 1.5, s)
    torch.manual_seed(7)
    x = 1.0 + 0.5 ** 0.5 * torch.randn(reps, 4, 1, dtype=torch.float64)
    y = torch.randn(reps, 4, 1, dtype=torch.float64)
    estimates = mmd_u(x, y, "imq", s)
    se = estimates.std() / math.sqrt(reps)
    assert abs(estimates.mean() - truth) < 4 * se, (float(estimates.mean()), float(truth), float(se))
    assert truth > 20 * se


def test_estimator_errors_and_default_scale():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least 2 draws"):
        mmd_u(x[:1], x)
    with pytest.raises(ValueError, match="unknown kernel 'laplace'"):
        mmd_u(x, x, "laplace")
    torch.testing.assert_close(mmd_u(x, x + 1), mmd_u(x, x + 1, "rbf", 6.0))  # default s = 2 D


def vae_pair(seed=0):
    torch.manual_seed(seed)
    return VAE(12, 3, (16,)), DiagNormalGuide(12, 3, (16,))


def binary_batch(n=8):
    return {"x": torch.bernoulli(torch.full((n, 12), 0.3), generator=torch.Generator().manual_seed(1))}


@pytest.mark.parametrize("kl, reference", [("analytic", MeanFieldELBO), ("sampled", ELBO)])
def test_alpha_0_lambda_1_is_the_elbo_on_the_same_draws(kl, reference):
    """The closed-form KL (the default) gives meanfield's loss, the sampled one elbo's."""
    model, guide = vae_pair()
    batch = binary_batch()
    params = list(guide.parameters()) + list(model.parameters())
    pyro.set_rng_seed(3)
    ours = InfoVAE(alpha=0.0, lam=1.0, kl=kl)(model, guide, batch)
    ours_grads = torch.autograd.grad(ours, params)
    pyro.set_rng_seed(3)
    theirs = reference()(model, guide, batch)
    theirs_grads = torch.autograd.grad(theirs, params)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, kl_form", [("rbf", "analytic"), ("imq", "analytic"), ("rbf", "sampled")])
def test_the_formula_by_hand(kernel, kl_form):
    """L = E log p(x|z) - (1 - alpha) KL - (alpha + lambda - 1) MMD^2_u(q(z), p(z)), each term
    written out on the same draws: eps for the guide, then the prior's draws."""
    model, guide = vae_pair()
    batch, alpha, lam = binary_batch(), 0.3, 4.0
    pyro.set_rng_seed(5)
    terms = InfoVAE(alpha=alpha, lam=lam, kernel=kernel, kl=kl_form)(model, guide, batch)
    pyro.set_rng_seed(5)
    x = batch["x"]
    q = guide.encode(x)
    z = q.base_dist.loc + q.base_dist.scale * torch.randn(8, 3)
    z_prior = torch.randn(8, 3)
    prior = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    reconstruction = dist.Bernoulli(logits=model.decoder(z)).to_event(1).log_prob(x).mean()
    kl = (q.log_prob(z) - prior.log_prob(z)).mean() if kl_form == "sampled" else \
        torch.distributions.kl_divergence(q, prior).mean()
    d = torch.cdist(z, z) ** 2, torch.cdist(z_prior, z_prior) ** 2, torch.cdist(z, z_prior) ** 2
    k = [torch.exp(-m / 6.0) if kernel == "rbf" else 6.0 / (6.0 + m) for m in d]
    off = 1 - torch.eye(8)
    mmd = (k[0] * off).sum() / 56 + (k[1] * off).sum() / 56 - 2 * k[2].mean()
    expected = -(reconstruction - (1 - alpha) * kl - (alpha + lam - 1) * mmd)
    torch.testing.assert_close(terms, expected, rtol=1e-5, atol=1e-5)


def test_any_pair_several_sites_and_the_prior_run_stops_before_the_likelihood():
    """A model with two latent sites of different shapes (z1: 2, z2: 3 x 2) and a likelihood
    that would fail if run from the prior: the per-datapoint rows are (N, 2 + 6)."""
    calls = []

    def model(x):
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1.sum(-1, keepdim=True).unsqueeze(-1).expand(len(x), 3, 2), 1.0)
                             .to_event(2))
            calls.append(z2.shape)
            pyro.sample("x", dist.Normal(z2.sum((-1, -2)), 1.0), obs=x)

    loc = torch.zeros(2, requires_grad=True)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z1", dist.Normal(loc + x[:, None], 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(torch.zeros(len(x), 3, 2), 0.5).to_event(2))

    x = torch.randn(6)
    out = InfoVAE(alpha=1.0, lam=10.0).terms(model, guide, {"x": x})
    assert torch.isfinite(out["objective"]) and out["mmd"].requires_grad
    torch.autograd.grad(out["objective"], [loc])  # the MMD reaches the guide's parameters
    from pyrovae.infer.importance import run_pair
    guide_sites, _ = run_pair(model, guide, {"x": x})
    rows = per_datapoint_values(guide_sites, ["z1", "z2"], 6, "data")
    assert rows.shape == (6, 8)
    torch.testing.assert_close(rows[:, 2:].reshape(6, 3, 2), guide_sites["z2"]["value"])


def test_the_linear_model_and_options():
    model = LinearGaussianVAE(x_dim=4, z_dim=2)
    guide = DiagNormalGuide(x_dim=4, z_dim=2)
    loss = InfoVAE(kernel="imq", kernel_scale=1.5)(model, guide, {"x": torch.randn(5, 4)})
    assert torch.isfinite(loss)
    assert get_objective("infovae") is InfoVAE
    assert objective_record(InfoVAE(alpha=1.0, lam=100.0)) == {
        "name": "infovae", "beta": 1.0, "warmup_steps": 0, "alpha": 1.0, "lam": 100.0, "kernel": "rbf",
        "kernel_scale": 0.0, "kl": "analytic"}
    for options, message in [({"alpha": 1.5}, "alpha must be <= 1"), ({"alpha": 0.0, "lam": 0.5}, "MMD weight"),
                             ({"kernel": "cauchy"}, "unknown kernel"), ({"kernel_scale": -1.0}, "kernel_scale"),
                             ({"kl": "exact"}, "unknown kl")]:
        with pytest.raises(ValueError, match=message):
            InfoVAE(**options)


def test_a_pair_without_per_datapoint_latents_is_refused():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.3, 1.0))

    with pytest.raises(ValueError, match="latent sites inside the data plate"):
        InfoVAE()(model, guide, {"x": torch.randn(5)})


def test_fit_from_the_command_line(tmp_path):
    """``pyrovae fit --objective infovae`` with its options as flags trains (the validation ELBO
    rises over three epochs), and the run folder records the options."""
    out = tmp_path / "run"
    result = pyrovae("fit", "--objective", "infovae", "--alpha", "1", "--lam", "100", "--kernel", "imq",
                     "--epochs", "3", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "0", "--no-progress",
                     "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    objective = json.loads((out / "run.json").read_text())["objective"]
    assert objective == {"name": "infovae", "beta": 1.0, "warmup_steps": 0, "alpha": 1.0, "lam": 100.0,
                         "kernel": "imq", "kernel_scale": 0.0, "kl": "analytic"}
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # from the data-mean initialisation (the default) there is no plateau to climb: a smaller but clear gain
    assert len(epochs) == 3 and epochs[-1]["valid_elbo"] > epochs[0]["valid_elbo"] + 0.25
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
