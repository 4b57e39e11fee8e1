"""Variance layers (pyrovae/nn/variance.py) and the variance VAE (models/variance.py):
local reparameterization against sampling the weights, the KL against its formula, the
objective against its closed form on a tiny case, and a real CLI fit."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import log_weights
from pyrovae.guides.variance import VarianceEncoder
from pyrovae.models.variance import VarianceVAE
from pyrovae.nn.variance import VarianceLinear, VarianceMLP, normal_kl
from tests.cli.helpers import QUICK, pyrovae
from tests.contract import binary_data, check_trains_and_improves

EULER_GAMMA = 0.5772156649015329


def test_local_reparameterization_matches_sampling_the_weights():
    """b = x W with W ~ N(0, sigma^2) drawn per row, against the layer's direct draw of b: both
    have mean 0 and variance (x^2) sigma^2 (the closed form), and Gaussian tails (kurtosis 3)."""
    torch.manual_seed(0)
    layer = VarianceLinear(3, 2)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    n = 40000
    with torch.no_grad():
        local = layer(x.expand(n, 2, 3))  # (n, 2 rows, 2 outputs)
        weights = layer.sample_weight(n)  # (n, 3, 2)
        direct = x @ weights  # (n, 2, 2)
        exact = (x ** 2) @ layer.weight_variance.T  # (2, 2)
    for draws in (local, direct):
        mean, var = draws.mean(0), draws.var(0)
        assert (mean.abs() < 5 * (exact / n).sqrt()).all(), (mean, exact)
        assert torch.allclose(var, exact, rtol=5 * math.sqrt(2 / n)), (var, exact)
        kurtosis = ((draws - mean) ** 4).mean(0) / var ** 2
        assert torch.allclose(kurtosis, torch.full_like(kurtosis, 3.0), atol=0.15), kurtosis
    assert torch.allclose(layer.output_variance(x), exact)


def test_each_row_and_particle_gets_its_own_noise():
    layer = VarianceLinear(4, 5)
    with torch.no_grad():
        out = layer(torch.ones(2, 3, 4))
    assert out.shape == (2, 3, 5) and len(set(out.flatten().tolist())) == out.numel()


def test_normal_prior_kl_is_the_closed_form():
    torch.manual_seed(0)
    layer = VarianceLinear(4, 3, prior="normal", prior_scale=0.7)
    sigma = layer.weight_variance.sqrt()
    expected = torch.distributions.kl_divergence(dist.Normal(0.0, sigma), dist.Normal(0.0, 0.7)).sum()
    assert torch.allclose(layer.kl(), expected, rtol=1e-5)
    # by hand: log(s/sigma) + sigma^2 / (2 s^2) - 1/2
    by_hand = (math.log(0.7) - sigma.log() + sigma ** 2 / (2 * 0.49) - 0.5).sum()
    assert torch.allclose(layer.kl(), by_hand, rtol=1e-5)
    assert torch.allclose(normal_kl(torch.zeros(()), 1.0), torch.zeros(()))  # q = p: 0


def test_log_uniform_kl_does_not_depend_on_the_variance():
    """KL(N(0, sigma^2) || p(w) ~ 1/|w|) = -H(q) + E_q log|w| + C: by Monte Carlo the same for
    every sigma, -log(2 pi e)/2 - (gamma + log 2)/2 + C, so the layer reports 0 and its gradient
    is nothing."""
    torch.manual_seed(0)
    eps = torch.randn(400000)
    values = []
    for sigma in (1e-3, 0.1, 1.0, 30.0):
        entropy = 0.5 * math.log(2 * math.pi * math.e * sigma ** 2)
        values.append(-entropy + float(torch.log((sigma * eps).abs()).mean()))
    closed = -0.5 * math.log(2 * math.pi * math.e) - 0.5 * (EULER_GAMMA + math.log(2))
    assert all(abs(v - closed) < 0.01 for v in values), (values, closed)
    layer = VarianceLinear(3, 2)
    assert float(layer.kl()) == 0.0
    assert VarianceMLP(3, (4,), 2, variance_layers=(0, 1)).kl().item() == 0.0


def tiny_case(num_data=10):
    """x (2, 3); the decoder one variance layer z (1) -> x (3), no bias: x | z, W ~ N(z W, s^2);
    the guide a fixed q(z | x) = N(m_n, v_n)."""
    torch.manual_seed(0)
    model = VarianceVAE(x_dim=3, z_dim=1, hidden_dims=(), variance_layers=(0,), likelihood="gaussian", scale=0.8,
                        prior="normal", prior_scale=0.5, num_data=num_data)
    x = torch.tensor([[0.3, -1.0, 0.5], [1.2, 0.2, -0.4]])
    m, v = torch.tensor([0.5, -1.5]), torch.tensor([0.3, 0.8])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m.unsqueeze(-1), v.sqrt().unsqueeze(-1)).to_event(1))

    sigma2 = model.decoder[0].weight_variance[:, 0]  # (3,)
    s2 = 0.8 ** 2
    expected_loglik = (-0.5 * math.log(2 * math.pi * s2) - (x ** 2 + (m ** 2 + v).unsqueeze(-1) * sigma2) / (2 * s2)).sum(-1)
    kl_z = 0.5 * (m ** 2 + v - 1 - v.log())
    kl_w = normal_kl(model.decoder[0].log_sigma2, 0.5).sum()
    elbo = expected_loglik - kl_z - kl_w / num_data  # per datapoint
    return model, guide, x, elbo.detach(), kl_w.detach()


def test_the_objective_equals_its_closed_form_on_a_tiny_case():
    """E_q(W) q(z|x)[log N(x; z W, s^2)] = sum_d -log(2 pi s^2)/2 - (x_d^2 + (m^2 + v) sigma_d^2) / (2 s^2)
    (zero-mean W); minus KL(q(z|x) || N(0, 1)) and KL(q(W) || p(W)) / N per datapoint. The
    model's per-datapoint log-weights average to it (within 5 standard errors), and so does
    Pyro's Trace_ELBO."""
    model, guide, x, elbo, _ = tiny_case()
    pyro.set_rng_seed(0)
    with torch.no_grad():
        log_w = log_weights(model, guide, {"x": x}, 100000)  # (K, 2)
    est, se = log_w.mean(0), log_w.std(0) / log_w.shape[0] ** 0.5
    assert ((est - elbo).abs() < 5 * se).all(), (est, elbo, se)
    loss = pyro.infer.Trace_ELBO(num_particles=100000, vectorize_particles=True, max_plate_nesting=1).loss(
        model, guide, x)
    assert abs(-loss - float(elbo.sum())) < 5 * float(se.pow(2).sum().sqrt()), (-loss, elbo.sum())


def test_the_weights_kl_is_a_training_term_only():
    """In training mode each datapoint's log-weight carries -KL/N; in eval mode (log_likelihood)
    the same draws without it: the difference is exactly KL/N."""
    model, guide, x, _, kl_w = tiny_case(num_data=7)
    pyro.set_rng_seed(3)
    train = log_weights(model, guide, {"x": x}, 4).detach()
    model.eval()
    pyro.set_rng_seed(3)
    evaluation = log_weights(model, guide, {"x": x}, 4).detach()
    assert torch.allclose(evaluation - train, (kl_w / 7).expand_as(train), atol=1e-5)


def test_the_variance_pair_trains_and_improves():
    torch.manual_seed(0)
    model = VarianceVAE(x_dim=12, z_dim=2, hidden_dims=(16, 16))
    guide = VarianceEncoder(x_dim=12, z_dim=2, hidden_dims=(16,))
    check_trains_and_improves(model, guide, "elbo", epochs=5)


def test_variance_layers_have_zero_mean_outputs_whatever_the_input():
    torch.manual_seed(0)
    net = VarianceMLP(5, (8,), 2, variance_layers=(0,))
    first = net[0]
    with torch.no_grad():
        out = first(torch.rand(1, 5).expand(20000, 5))
    assert (out.mean(0).abs() < 5 * out.std(0) / 20000 ** 0.5).all()


def test_options_are_checked():
    with pytest.raises(ValueError, match="num_data"):
        VarianceVAE(x_dim=4, prior="normal")
    with pytest.raises(ValueError, match="variance_layers must be distinct indices of linear layers 0..1"):
        VarianceVAE(x_dim=4, hidden_dims=(8,), variance_layers=(2,))
    with pytest.raises(ValueError, match="unknown variance-layer prior"):
        VarianceVAE(x_dim=4, prior="cauchy", num_data=3)
    with pytest.raises(ValueError, match="encoder_variance_layers"):
        VarianceEncoder(x_dim=4, hidden_dims=(), encoder_variance_layers=(0, 1))


def test_cli_fit(tmp_path):
    """pyrovae fit --model variance-vae --guide variance-encoder on the digits, in a fresh
    process: a finite test log-likelihood, the options saved."""
    done = pyrovae("fit", "--model", "variance-vae", "--guide", "variance-encoder", "--data", "digits", *QUICK,
                   "--hidden-dims", "16", "16", "--eval-samples", "5", "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["name"] == "variance-vae" and saved["model"]["options"]["variance_layers"] == [1]
    assert saved["guide"]["options"]["encoder_variance_layers"] == [0]
