"""Latent monitors against closed forms: active units of a guide with known means, analytic and
sampled KL per dimension, rate/distortion of a linear-Gaussian model, the bounds of the
mutual-information estimator, and the per-epoch entries fit() logs."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit, latent_monitors
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.evaluation.monitors import MonitorNotApplicable, epoch_monitors, mutual_information
from tests.pyrovae.linear_gaussian import DiagExactGuide, linear_gaussian, simulate_x

N = 400


def _model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(z.shape[:-1] + x.shape[-1:]), 1.0).to_event(1), obs=x)


def _table_guide(scales=(1.0, 0.3, 0.05, 0.0), factor=dist.Normal):
    """loc[n] = x[n, 0] * scales: the per-dimension variance of the means is scales^2 Var(x0)."""
    s = torch.tensor(scales)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", factor(x[:, :1] * s, 0.5 * torch.ones(x.shape[0], 4)).to_event(1))

    return guide


def _standardized(n=N, d=3):
    x = torch.randn(n, d)
    return (x - x.mean(0)) / x.std(0, unbiased=False)     # Var_n(x[:, 0]) = 1 exactly


def test_active_units_of_a_guide_with_known_means():
    x = _standardized()
    m = latent_monitors(_model, _table_guide(), x)
    expected = torch.tensor([1.0, 0.09, 0.0025, 0.0])     # scales^2: dims 0 and 1 exceed 0.01
    assert torch.allclose(m.mean_variance, expected, atol=1e-5)
    assert m.active_units == 2 and m.num_latents == 4


def test_kl_per_dim_matches_torch_and_rate_is_its_sum():
    x = _standardized()
    m = latent_monitors(_model, _table_guide(), x)
    loc = x[:, :1] * torch.tensor([1.0, 0.3, 0.05, 0.0])
    expected = torch.distributions.kl_divergence(dist.Normal(loc, 0.5), dist.Normal(0.0, 1.0)).mean(0)
    assert m.kl_method == "analytic"
    assert torch.allclose(m.kl_per_dim, expected, atol=1e-5)
    assert m.rate == pytest.approx(float(expected.sum()), abs=1e-4)


def test_sampled_kl_per_dim_for_a_laplace_guide():
    """KL(Laplace(m, b) || N(0, 1)) = -1 - log(2b) + log(2 pi)/2 + (m^2 + 2 b^2)/2."""
    x = _standardized(4000)
    m = latent_monitors(_model, _table_guide(factor=dist.Laplace), x)
    loc = x[:, :1] * torch.tensor([1.0, 0.3, 0.05, 0.0])
    b = 0.5
    expected = (-1 - math.log(2 * b) + 0.5 * math.log(2 * math.pi) + 0.5 * (loc ** 2 + 2 * b * b)).mean(0)
    assert m.kl_method == "analytic"  # kl_divergence knows Laplace || Normal (infer.importance.kl_or_sampled)
    assert torch.allclose(m.kl_per_dim, expected, atol=0.03)


def test_rate_and_distortion_of_a_linear_gaussian_model_in_closed_form():
    """q = the exact posterior N(mu, diag v) (W orthogonal): the distortion
    E_q[-log N(x; W z + b, s^2 I)] = d/2 log(2 pi s^2) + (|x - W mu - b|^2 + tr(W diag(v) W^T)) / (2 s^2),
    and -(rate + distortion) = the ELBO = log p(x) for an exact posterior."""
    model = linear_gaussian(orthogonal=True)
    x = simulate_x(model, N)
    guide = DiagExactGuide(model)
    q = guide.encode(x).base_dist
    s2 = model.noise_scale ** 2
    resid = x - q.loc @ model.weight.T - model.bias
    trace = (q.scale ** 2 * (model.weight ** 2).sum(0)).sum(-1)
    distortion = (0.5 * x.shape[1] * torch.log(2 * math.pi * s2) + (resid.pow(2).sum(-1) + trace) / (2 * s2)).mean()
    m = latent_monitors(model, guide, x, num_samples=50)
    assert m.distortion == pytest.approx(float(distortion), abs=0.02)
    assert -(m.rate + m.distortion) == pytest.approx(float(model.log_marginal(x).mean().detach()), abs=0.02)


def test_mutual_information_is_zero_without_dependence_and_at_most_log_n():
    loc = torch.zeros(50, 3)
    same = dist.Normal(loc, torch.ones_like(loc)).to_event(1)      # q(z|x) identical for every x
    assert abs(mutual_information(same, num_samples=4)) < 1e-5
    far = dist.Normal(10.0 * torch.arange(50.0).unsqueeze(-1).expand(50, 3), torch.ones(50, 3)).to_event(1)
    mi = mutual_information(far, num_samples=4)                     # codes never overlap: I = log N
    assert math.log(50) - 1e-3 < mi <= math.log(50) + 1e-6
    mid = dist.Normal(0.5 * torch.randn(50, 3), torch.ones(50, 3)).to_event(1)
    assert 0 < mutual_information(mid, num_samples=20) < math.log(50)


def test_monitors_need_one_vector_latent_site():
    def two_sites(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    x = torch.randn(10, 3)
    with pytest.raises(MonitorNotApplicable, match=r"--site NAME \(pyrovae diagnose; site= in Python\)"):
        latent_monitors(_model, two_sites, x)
    assert epoch_monitors(_model, two_sites, x) == {}


def test_fit_logs_the_monitors_each_epoch_without_moving_the_random_streams():
    x = torch.bernoulli(torch.full((200, 12), 0.3))
    model, guide = VAE(12, 3, (16,)), DiagNormalGuide(12, 3, (16,))
    state = torch.get_rng_state()
    row = epoch_monitors(model, guide, {"x": x})
    assert torch.equal(state, torch.get_rng_state())
    assert set(row) >= {"active_units", "rate", "distortion", "mutual_info", "kl_dim_max"}
    result = fit(model, guide, x[:150], epochs=2, batch_size=50, valid_data=x[150:], progress=False)
    again = epoch_monitors(model, guide, {"x": x[150:]})  # the logged row is that of the pair returned (keep_best)
    for key in ("active_units", "kl_dim_max", "kl_dim_min"):
        assert result.metrics[result.weights_epoch - 1][key] == pytest.approx(again[key], rel=1e-5), key
    for row in result.metrics:
        assert 0 <= row["mutual_info"] <= math.log(50) + 1e-6
        assert -(row["rate"] + row["distortion"]) == pytest.approx(row["valid_elbo"], abs=0.5)
