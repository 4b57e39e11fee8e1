"""AIS and BDMC against closed forms: the linear-Gaussian model (exact log p(x) = log N(x; b,
W W^T + s^2 I)) and a Gamma-Poisson model (a positive latent, exact negative-binomial-type
marginal), plus the batched HMC kernel."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import ais_log_likelihood, bdmc
from pyrovae.evaluation.ais import schedule
from pyrovae.evaluation.hmc import evaluate_path, hmc_transition
from pyrovae.evaluation.latent_space import LatentSpace
from tests.pyrovae.linear_gaussian import ExactPosteriorGuide, linear_gaussian, simulate_x


def test_ais_matches_the_exact_log_likelihood_of_a_linear_gaussian_model():
    model = linear_gaussian()
    x = simulate_x(model, 20)
    exact = model.log_marginal(x)
    est = ais_log_likelihood(model, None, x, num_steps=500, num_chains=16)
    assert abs(est.log_likelihood - float(exact.mean())) < 0.1       # nats
    assert (est.per_datapoint - exact.double()).abs().max() < 0.4
    assert 0.55 < est.accept_rate < 0.75                              # step sizes adapted toward 0.65
    assert est.log_weights.shape == (16, 20)                          # adaptation chains dropped


def test_ais_from_an_exact_guide_is_exact_with_few_steps():
    """Starting at q = p(z | x), every intermediate density is the posterior: log w = log p(x)."""
    model = linear_gaussian()
    x = simulate_x(model, 8)
    est = ais_log_likelihood(model, ExactPosteriorGuide(model), x, num_steps=5, num_chains=4, start="guide")
    assert torch.allclose(est.per_datapoint, model.log_marginal(x).double(), atol=1e-3)


def _gamma_poisson(alpha=2.0, rate=0.5):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(torch.tensor(alpha), torch.tensor(rate)))
            pyro.sample("x", dist.Poisson(z.unsqueeze(-1).expand(*z.shape, x.shape[-1])).to_event(1), obs=x)

    def exact(x):
        d, total = x.shape[-1], x.sum(-1)
        return (alpha * math.log(rate) - math.lgamma(alpha) + torch.lgamma(alpha + total)
                - (alpha + total) * torch.log(torch.tensor(rate + d)) - torch.lgamma(x + 1).sum(-1))

    return model, exact


def test_ais_on_a_positive_latent_uses_the_unconstrained_space():
    model, exact = _gamma_poisson()
    x = torch.tensor([[0.0, 1.0, 2.0], [5.0, 7.0, 4.0], [1.0, 0.0, 0.0], [12.0, 9.0, 15.0]])
    space = LatentSpace(model, {"x": x})
    u = space.sample_prior(3)
    values, _ = space.unflatten(u)
    assert (values["z"] > 0).all() and torch.allclose(space.flatten(values), u, atol=1e-5)
    est = ais_log_likelihood(model, None, x, num_steps=300, num_chains=16)
    assert abs(est.log_likelihood - float(exact(x).mean())) < 0.1


def test_bdmc_gap_closes_as_the_number_of_intermediate_distributions_grows():
    model = linear_gaussian(x_dim=3, z_dim=2)
    x = torch.zeros(10, 3)  # shapes only: BDMC simulates its own data
    gaps, results = [], []
    for num_steps in (10, 100, 1000):
        pyro.set_rng_seed(0)
        result = bdmc(model, x, num_steps=num_steps, num_chains=8)
        gaps.append(result.gap)
        results.append(result)
    assert gaps[0] > gaps[1] > gaps[2] - 0.02, gaps                  # monotone within noise
    assert gaps[0] > 0.5 and 0 <= gaps[2] < 0.1, gaps
    final = results[-1]
    exact = float(model.log_marginal(final.data["x"]).mean().detach())
    assert final.lower.log_likelihood - 0.05 < exact < final.upper.log_likelihood + 0.05
    assert final.upper.reverse and not final.lower.reverse


def test_schedules_run_from_prior_to_posterior():
    for kind in ("sigmoid", "linear"):
        betas = schedule(50, kind)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert schedule(50, "sigmoid")[1] < schedule(50, "linear")[1]   # denser near the ends


def _gaussian_densities(u):
    """pi_0 = N(0, I), target N(2, 0.5^2 I) per datapoint (unnormalized)."""
    log_start = dist.Normal(0.0, 1.0).log_prob(u).sum(-1)
    return log_start, dist.Normal(2.0, 0.5).log_prob(u).sum(-1) + 3.0


def test_hmc_accepts_per_chain_and_leaves_the_target_invariant():
    torch.manual_seed(0)
    u = 2.0 + 0.5 * torch.randn(4000, 2, 3)            # exact draws of the target, 2 datapoints
    state = evaluate_path(_gaussian_densities, u)
    step = torch.tensor([0.3, 20.0])                   # datapoint 1: absurd steps, always rejected
    accepts = []
    for _ in range(10):
        state, accept = hmc_transition(_gaussian_densities, state, 1.0, step, num_leapfrog_steps=3)
        accepts.append(accept.mean(0))
    accept = torch.stack(accepts).mean(0)
    assert accept[0] > 0.8 and accept[1] < 0.05       # one accept/reject per chain, not one for all
    moved = state.u[:, 0]
    assert abs(float(moved.mean()) - 2.0) < 0.03 and abs(float(moved.std()) - 0.5) < 0.03


def test_bad_input_is_reported_early():
    model = linear_gaussian()
    x = simulate_x(model, 3)
    with pytest.raises(ValueError, match="pass the guide"):
        ais_log_likelihood(model, None, x, num_steps=5, start="guide")
    with pytest.raises(ValueError, match="num_chains"):
        ais_log_likelihood(model, None, x, num_chains=0)

    def discrete(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1).expand(x.shape), 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="discrete"):
        ais_log_likelihood(discrete, None, x, num_steps=5)


def test_evaluate_prints_and_saves_ais_beside_the_importance_estimate(tmp_path, capsys):
    from pyrovae.cli.commands import main

    out = tmp_path / "run"
    assert main(["fit", "--epochs", "1", "--z-dim", "2", "--hidden-dims", "16", "--out", str(out),
                 "--eval-samples", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "50", "--limit", "10", "--ais", "--ais-steps", "20",
                 "--ais-chains", "4", "--ais-leapfrog", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ais"]["num_steps"] == 20 and result["ais"]["num_datapoints"] == 10
    assert result["ais"]["log_likelihood"] < 0 and result["ais"]["seconds"] > 0
    assert json.loads((out / "evaluation-test-K50.json").read_text())["ais"] == result["ais"]
