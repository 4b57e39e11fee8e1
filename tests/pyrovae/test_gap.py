"""The inference gap split on a linear-Gaussian model whose exact posterior is a diagonal
Gaussian (W with orthogonal columns): the optimal member of the guide's family is exact,
so the refined ELBO reaches log p(x) and the approximation gap vanishes."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import inference_gap
from pyrovae.evaluation.inference_gap import local_gaussian
from pyrovae.guides import DiagNormalGuide
from tests.pyrovae.linear_gaussian import DiagExactGuide, ExactPosteriorGuide, linear_gaussian, simulate_x


def test_a_bad_encoder_has_a_large_amortization_gap_and_no_approximation_gap():
    model = linear_gaussian(x_dim=5, z_dim=2, orthogonal=True)
    x = simulate_x(model, 16)
    exact = float(model.log_marginal(x).mean())
    torch.manual_seed(0)
    bad = DiagNormalGuide(5, 2, (8,))                  # untrained: far from each posterior
    gap = inference_gap(model, bad, x, elbo_samples=500, num_samples=500)
    assert gap.amortization_gap > 2.0
    assert gap.elbo_refined == pytest.approx(exact, abs=0.03)          # optimal Gaussian ELBO = log p(x)
    assert abs(gap.approximation_gap) < 0.03
    assert gap.log_likelihood == pytest.approx(exact, abs=0.01)
    assert gap.inference_gap == pytest.approx(gap.approximation_gap + gap.amortization_gap)
    assert gap.estimator == "mixture-is-500"


def test_an_exact_encoder_has_no_amortization_gap():
    model = linear_gaussian(x_dim=5, z_dim=2, orthogonal=True)
    x = simulate_x(model, 16)
    gap = inference_gap(model, DiagExactGuide(model), x, refine_steps=50, elbo_samples=500, num_samples=200)
    assert abs(gap.amortization_gap) < 0.01 and abs(gap.approximation_gap) < 0.01


def test_a_correlated_posterior_leaves_an_approximation_gap():
    """With nearly parallel columns of W the posterior is strongly correlated: the best diagonal
    Gaussian misses log p(x) by KL(q* || p(z|x)) = -1/2 log(1 - rho^2) (2-D), however long it
    is refined: that is the approximation gap."""
    weight = [[1.0, 1.0], [1.0, 0.8], [0.0, 0.2]]
    model = linear_gaussian(x_dim=3, z_dim=2, noise=0.3, weight=weight)
    cov = model.posterior(torch.zeros(1, 3)).covariance_matrix[0]
    rho = cov[0, 1] / cov.diagonal().prod().sqrt()
    expected = float(-0.5 * torch.log(1 - rho ** 2))
    assert expected > 0.5
    x = simulate_x(model, 8)
    gap = inference_gap(model, DiagExactGuide(model), x, num_samples=2000)
    assert gap.approximation_gap == pytest.approx(expected, abs=0.05)
    assert gap.amortization_gap > 0.1          # the marginal scales are not the mean-field optimum


def test_guides_without_a_diagonal_gaussian_are_refused_clearly():
    model = linear_gaussian()
    x = simulate_x(model, 4)
    with pytest.raises(ValueError, match="diagonal Gaussian"):
        local_gaussian(ExactPosteriorGuide(model), {"x": x})

    def laplace(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="diagonal Gaussian"):
        inference_gap(model, laplace, x)


def test_ais_as_the_log_likelihood_estimator_agrees_with_the_exact_value():
    model = linear_gaussian(x_dim=3, z_dim=2, noise=0.3, weight=[[1.0, 1.0], [1.0, 0.8], [0.0, 0.2]])
    x = simulate_x(model, 8)
    gap = inference_gap(model, DiagExactGuide(model), x, refine_steps=20, estimator="ais", ais_steps=300,
                        ais_chains=16)
    assert gap.log_likelihood == pytest.approx(float(model.log_marginal(x).mean().detach()), abs=0.1)
    assert gap.estimator == "ais-300x16"
