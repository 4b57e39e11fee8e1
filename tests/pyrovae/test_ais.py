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


def test_ais_weights_are_unbiased_for_p_x_with_few_steps():
    """E[w] = p(x) exactly, for any number of steps: with 3 temperatures and 500 chains the mean
    of w / p(x) over chains and datapoints is 1 within 4 standard errors. Weighting each chain
    after its transition instead of before breaks this by about 40 standard errors (0.6 nats)."""
    model = linear_gaussian(x_dim=3, z_dim=1, noise=1.0)
    x = simulate_x(model, 20)
    exact = model.log_marginal(x).double()
    est = ais_log_likelihood(model, None, x, num_steps=3, num_chains=500, step_size=1.0)
    ratio = torch.exp(est.log_weights - exact)                         # (500, 20): w / p(x)
    stderr = float(ratio.std() / math.sqrt(ratio.numel()))
    assert abs(float(ratio.mean()) - 1) < 4 * stderr, (float(ratio.mean()), stderr)
    assert 0.2 < est.accept_rate < 0.8                                 # the transitions do move the chains
    assert abs(est.log_likelihood - float(exact.mean())) < 0.05


def _fake_transition(calls):
    """Moves every chain by +1 and reports acceptance 1 for the first chains, 0 for the rest."""

    def transition(densities, state, beta, step_size, num_leapfrog_steps):
        calls.append(beta)
        accept = torch.zeros(state.u.shape[:2])
        accept[:2] = 1.0                                                # the 2 adaptation chains
        return evaluate_path(densities, state.u + 1.0), accept

    return transition


@pytest.mark.parametrize("reverse", [False, True])
def test_anneal_weights_each_state_before_moving_it_and_drops_the_adaptation_chains(monkeypatch, reverse):
    """The bookkeeping of :func:`anneal`, with a deterministic transition z -> z + 1: chain c's
    log-weight is sum_t (beta_t - beta_{t-1}) r(z_c + t - 1), r = log p(x, z) - log pi_0(z),
    the state before the t-th transition; the adaptation chains (first 2) tune the step size and
    are not in the result."""
    from pyrovae.evaluation import ais as ais_module

    calls = []
    monkeypatch.setattr(ais_module, "hmc_transition", _fake_transition(calls))
    betas = torch.tensor([0.0, 0.1, 0.45, 1.0], dtype=torch.float64)
    u = torch.linspace(-2.0, 3.0, 6 * 2).reshape(6, 2, 1)               # (C + 2, N, D), distinct chains
    log_w, accept, step = ais_module.anneal(_gaussian_densities, u, betas, step_size=0.1, adapt_chains=2,
                                            target_accept=0.6, reverse=reverse)

    def ratio(shift):                                                   # r at the chains moved by `shift`
        log_start, log_target = _gaussian_densities(u + shift)
        return (log_target - log_start).double()

    if reverse:   # from beta_T down to beta_0, weights beta_{t-1} - beta_t
        expected = sum((betas[t - 1] - betas[t]) * ratio(3 - t) for t in (3, 2, 1))
        assert calls == [0.45, 0.1]
    else:
        expected = sum((betas[t] - betas[t - 1]) * ratio(t - 1) for t in (1, 2, 3))
        assert calls == [0.1, 0.45]
    assert log_w.shape == (4, 2) and log_w.dtype == torch.float64
    torch.testing.assert_close(log_w, expected[2:], rtol=1e-6, atol=1e-5)
    assert accept == 0.0                                                 # the estimating chains' rate
    torch.testing.assert_close(step, torch.full((2,), 0.1 * math.exp(2 * 0.4)))  # adapted on the first 2 only


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
    """AIS and importance sampling of the same run on the same datapoints estimate the same
    log p(x): the two numbers agree (here within 0.1 nat; 0.3 allowed), the ELBO is apart."""
    from pyrovae.cli import main

    out = tmp_path / "run"
    assert main(["fit", "--epochs", "1", "--z-dim", "2", "--hidden-dims", "16", "--out", str(out),
                 "--eval-samples", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "500", "--limit", "10", "--ais", "--ais-steps", "100",
                 "--ais-chains", "4", "--ais-leapfrog", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ais = result["ais"]
    assert ais["num_steps"] == 100 and ais["num_chains"] == 4 and ais["num_datapoints"] == 10
    assert abs(ais["log_likelihood"] - result["log_likelihood"]) < 0.3, (ais, result)
    assert result["log_likelihood"] - result["elbo"] > 0.1        # so agreeing with the ELBO would not do
    saved = list(out.glob("evaluation-test-K500*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["ais"] == ais
    kept = json.loads(saved[0].read_text())["ais_per_datapoint"]
    assert len(kept) == 10 and sum(kept) / 10 == pytest.approx(ais["log_likelihood"])


def test_compare_ais_pairs_the_kept_ais_estimates(tmp_path, capsys):
    """``pyrovae compare --ais`` pairs two runs' AIS estimates datapoint by datapoint; without
    ``--ais`` the same folders pair their importance-sampled ones; a run scored without AIS is
    named in one line."""
    from pyrovae.cli import main

    for name, z in (("a", "2"), ("b", "3")):
        assert main(["fit", "--epochs", "1", "--z-dim", z, "--hidden-dims", "16", "--out", str(tmp_path / name),
                     "--eval-samples", "0", "--no-progress"]) == 0
        assert main(["evaluate", str(tmp_path / name), "--num-samples", "50", "--limit", "8", "--ais",
                     "--ais-steps", "20", "--ais-chains", "2"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--ais", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = [json.loads((tmp_path / n / "evaluation-test-K50-limit8-ais20x2.json").read_text()) for n in "ab"]
    d = [b - a for a, b in zip(files[0]["ais_per_datapoint"], files[1]["ais_per_datapoint"])]
    assert out["estimator"] == "ais" and out["paired"]["mean"] == pytest.approx(sum(d) / 8)
    assert out["b_log_likelihood"] == pytest.approx(files[1]["ais"]["log_likelihood"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 2  # no importance-only files
    assert "no evaluation for --split test" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "a"), "--num-samples", "50", "--limit", "8"]) == 0
    capsys.readouterr()
    path = tmp_path / "a" / "evaluation-test-K50-limit8.json"
    assert main(["compare", str(path), str(path), "--ais"]) == 2
    assert "keeps no per-datapoint AIS estimates (no AIS run)" in capsys.readouterr().err
