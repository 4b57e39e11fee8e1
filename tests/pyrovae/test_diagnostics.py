"""ArviZ InferenceData of an amortized fit and the PSIS k-hat of its importance weights, checked
on the linear-Gaussian model whose exact posterior is known; the latent-space figures; and
`pyrovae diagnose` end to end."""

import importlib.util
import json
import warnings

import numpy as np
import pyro
import pytest
import torch

from pyrovae import (khat_summary, latent_monitors, load_run, log_likelihood, psis_diagnostic, psis_khat,
                     to_inference_data)
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.diagnostics import save_inference_data
from pyrovae.models import VAE
from pyrovae.evaluation.plots import decoded_mean, slerp
from tests.pyrovae.linear_gaussian import ExactPosteriorGuide, linear_gaussian, simulate_x

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


@pytest.fixture
def idata_exact():
    model = linear_gaussian()
    x = simulate_x(model, 30)
    return model, x, to_inference_data(model, ExactPosteriorGuide(model), x, num_samples=400, num_datapoints=25,
                                       num_predictive=50)


def test_inference_data_groups_and_values_in_closed_form(idata_exact):
    model, x, idata = idata_exact
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "prior",
            "prior_predictive", "sample_stats"} <= set(idata.groups())
    assert dict(idata.posterior["z"].sizes) == {"chain": 1, "draw": 400, "datapoint": 25, "z_dim": 2}
    assert dict(idata.posterior_predictive["x"].sizes) == {"chain": 1, "draw": 50, "datapoint": 25, "x_dim": 4}
    assert np.array_equal(idata.observed_data["x"].values, x[:25].numpy())
    z = torch.tensor(idata.posterior["z"].values[0])                        # (S, N, 2)
    with torch.no_grad():
        loc = z @ model.weight.T + model.bias
        expected = torch.distributions.Normal(loc, model.noise_scale).log_prob(x[:25]).sum(-1)
        exact = model.log_marginal(x[:25])
    assert np.allclose(idata.log_likelihood["x"].values[0], expected.numpy(), atol=1e-4)
    stats = idata.sample_stats
    assert np.allclose(stats["log_weight"], stats["lp"] - stats["log_q"], atol=1e-5)
    # q = p(z | x): every importance weight equals p(x)
    assert np.allclose(stats["log_weight"].values[0], exact.numpy()[None], atol=1e-3)
    # fresh predictive draws, paired with the posterior draws of the same index
    resid = torch.tensor(idata.posterior_predictive["x"].values[0]) - loc[:50]
    assert abs(float(resid.std()) - model.noise_scale.item()) < 0.03 and abs(float(resid.mean())) < 0.03
    post_mean = idata.posterior["z"].values[0].mean(0)
    assert np.allclose(post_mean, model.posterior(x[:25]).loc.detach().numpy(), atol=0.12)
    prior = idata.prior["z"].values
    assert abs(prior.mean()) < 0.05 and abs(prior.std() - 1) < 0.05


def test_arviz_runs_on_it_and_netcdf_round_trips_through_h5netcdf(idata_exact, tmp_path):
    _, _, idata = idata_exact
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=["z"])
        ess = az.ess(idata, var_names=["z"])
        loo = az.loo(idata)
    assert len(summary) == 25 * 2 and (summary["ess_bulk"] > 100).all()   # independent draws: high ESS
    assert ess["z"].shape == (25, 2) and np.isfinite(loo["elpd_loo"])
    path = save_inference_data(idata, tmp_path / "diagnostics.nc")
    back = az.from_netcdf(str(path), engine="h5netcdf")
    assert np.array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    assert np.array_equal(back.sample_stats["log_weight"].values, idata.sample_stats["log_weight"].values)
    if importlib.util.find_spec("netCDF4") is None:                        # the path that needs no netCDF4
        assert path.stat().st_size > 0


def _khat(model, factor, n=40, s=2000):
    x = simulate_x(model, n)
    return psis_diagnostic(model, ExactPosteriorGuide(model, factor), x, num_samples=s)


def test_khat_is_small_for_the_exact_posterior_and_large_for_a_too_narrow_guide():
    model = linear_gaussian()
    wide = _khat(model, 1.0)
    assert (wide < 0.5).mean() >= 0.95
    narrow = _khat(model, 0.2)
    assert (narrow > 0.7).mean() >= 0.95
    summary = khat_summary(narrow)
    assert summary["share_above_0.7"] >= 0.95 and summary["max"] >= summary["median"] > 0.7


def test_khat_smooths_along_the_sample_axis():
    """psis_khat takes (S, N) and must equal ArviZ on (N, S); a heavy-tailed column must stand out."""
    gen = np.random.default_rng(0)
    log_w = gen.normal(size=(1000, 3))
    log_w[:, 2] = gen.standard_cauchy(1000) * 3                    # heavy tail in datapoint 2 only
    khat = psis_khat(torch.tensor(log_w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, expected = az.psislw(log_w.T.copy())
    assert khat.shape == (3,) and np.allclose(khat, expected)
    assert khat[2] > 0.7 > max(khat[0], khat[1])


def test_decoded_mean_and_spherical_interpolation():
    model = VAE(6, 2, (8,))
    z = torch.randn(5, 2)
    mean = decoded_mean(model, {"x": torch.zeros(5, 6)}, "z", z)
    assert torch.allclose(mean, model.likelihood(z).mean)
    a, b = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    path = slerp(a, b, torch.linspace(0, 1, 7))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), torch.ones(7), atol=1e-5)
    angles = torch.arccos((path[1:] * path[:-1]).sum(-1).clamp(-1, 1))
    assert torch.allclose(angles, angles[0].expand(6), atol=1e-4)         # constant angular speed


def test_diagnose_writes_a_report_linking_every_figure(tmp_path, capsys):
    from pyrovae.cli.commands import main

    out = tmp_path / "run"
    assert main(["fit", "--epochs", "2", "--z-dim", "3", "--hidden-dims", "32", "--out", str(out),
                 "--eval-samples", "0", "--no-progress"]) == 0
    assert main(["diagnose", str(out), "--num-samples", "100", "--num-datapoints", "60", "--idata-draws", "20",
                 "--gap-datapoints", "10", "--ais", "--ais-steps", "10", "--ais-chains", "2",
                 "--ais-datapoints", "5"]) == 0
    assert "report:" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    for name in ("training_curves.png", "samples.png", "reconstructions.png", "traversals.png",
                 "interpolations.png", "latent_map.png", "khat.png", "kl_per_dim.png", "diagnostics.nc"):
        assert (out / name).is_file() and f"({name})" in report, name
    numbers = json.loads((out / "diagnostics.json").read_text())
    assert numbers["khat"]["num_datapoints"] == 60 and numbers["ais"]["num_datapoints"] == 5
    assert not numbers["skipped"]
    # the numbers are those of the Python API on the same run and test datapoints
    run = load_run(out)
    data = run.config["data"]
    test = load_dataset(data["name"], binarize=data.get("binarize")).test
    iw = numbers["importance"]
    pyro.set_rng_seed(0)                                        # diagnose's default --seed: the same draws
    est = log_likelihood(run.model, run.guide, {k: v[:60] for k, v in test.items()}, num_samples=100)
    assert iw["num_datapoints"] == 60
    assert iw["log_likelihood"] == pytest.approx(est.log_likelihood, abs=1e-4)
    assert iw["elbo"] == pytest.approx(est.elbo, abs=1e-4)
    assert iw["log_likelihood"] - iw["elbo"] > 0.05            # two different numbers, not one twice
    monitors = latent_monitors(run.model, run.guide, test, max_datapoints=1000)
    assert numbers["monitors"]["active_units"] == monitors.active_units
    assert numbers["monitors"]["rate"] == pytest.approx(monitors.rate, rel=1e-5)
    # the gap split adds up, and its ends are the log-likelihood and ELBO of its 10 datapoints
    gap = numbers["gap"]
    assert gap["inference_gap"] == pytest.approx(gap["log_likelihood"] - gap["elbo_amortized"])
    assert gap["approximation_gap"] + gap["amortization_gap"] == pytest.approx(gap["inference_gap"])
    assert gap["amortization_gap"] == pytest.approx(gap["elbo_refined"] - gap["elbo_amortized"])
    first = log_likelihood(run.model, run.guide, {k: v[:10] for k, v in test.items()}, num_samples=2000)
    assert gap["log_likelihood"] == pytest.approx(first.log_likelihood, abs=0.1)
    assert gap["elbo_amortized"] == pytest.approx(first.elbo, abs=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = az.from_netcdf(str(out / "diagnostics.nc"))
    assert dict(idata.posterior["z"].sizes)["draw"] == 20
