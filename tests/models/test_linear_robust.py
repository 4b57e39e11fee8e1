"""The robust-PCA view of the VAE (Dai et al.): principal component pursuit on a planted
problem, the per-dimension-variance linear model against its exact marginal, the robust
model's Student-t marginal, and the robust linear VAE beating PCA on grossly corrupted data."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit
from pyrovae.evaluation.robust_pca import pcp
from pyrovae.evaluation.subspace import leading_subspace, principal_angles
from pyrovae.guides.robust import RobustEncoder
from pyrovae.models import LinearGaussianVAE, RobustVAE
from pyrovae.guides.robust import log_likelihood_z_only


def planted(n=80, d=60, rank=2, rate=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, d, generator=g, dtype=torch.float64)
    support = torch.rand(n, d, generator=g, dtype=torch.float64) < rate
    signs = torch.where(torch.rand(n, d, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    sparse = torch.where(support, 10.0 * signs, torch.zeros((), dtype=torch.float64))
    return low, sparse, support


def test_pcp_recovers_a_planted_low_rank_plus_sparse_matrix_exactly():
    low, sparse, support = planted()
    result = pcp(low + sparse)
    assert result.residual < 1e-7 and result.rank == 2
    assert float((result.low_rank - low).norm() / low.norm()) < 1e-6
    assert float((result.sparse - sparse).abs().max()) < 1e-4
    assert torch.equal(result.sparse.abs() > 1e-3, support)


def test_pcp_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="matrix"):
        pcp(torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        pcp(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def diagonal_model(d=5, q=2, seed=0):
    torch.manual_seed(seed)
    model = LinearGaussianVAE(d, q, noise="diagonal")
    with torch.no_grad():
        model.bias.normal_()
        model.raw_scale.copy_(torch.linspace(-1.0, 1.0, d))
    return model


def test_diagonal_noise_is_one_variance_per_dimension_and_its_log_marginal_is_exact():
    model = diagonal_model()
    psi = model.noise_scale.detach() ** 2
    assert psi.shape == (5,) and len(set(psi.tolist())) == 5
    x = torch.randn(7, 5, dtype=torch.float64)
    model = model.double()
    w, b = model.weight.detach(), model.bias.detach()
    exact = dist.MultivariateNormal(b, covariance_matrix=w @ w.T + torch.diag(psi.double())).log_prob(x)
    torch.testing.assert_close(model.log_marginal(x).detach(), exact)
    # the posterior is exact: log p(x) = log p(z) + log p(x | z) - log p(z | x) at any z
    post = model.posterior(x)
    z = torch.randn(7, 2, dtype=torch.float64)
    joint = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
             + dist.Normal(z @ w.T + b, psi.double().sqrt()).log_prob(x).sum(-1))
    torch.testing.assert_close((joint - post.log_prob(z)).detach(), exact)


def test_isotropic_noise_is_still_the_default_and_a_scalar():
    model = LinearGaussianVAE(4, 2)
    assert model.options.noise == "isotropic" and model.noise_scale.shape == ()
    with pytest.raises(ValueError, match="unknown noise 'full'"):
        LinearGaussianVAE(4, 2, noise="full")


def test_robust_likelihood_with_tau_integrated_out_is_student_t():
    """E_tau N(x; f(z), psi / tau) with tau ~ Gamma(nu/2, nu/2) is t_nu(x; f(z), sqrt(psi)):
    checked against the Gamma mixture by Monte Carlo over tau."""
    torch.manual_seed(0)
    model = RobustVAE(3, 2, df=3.0).double()
    x, z = torch.tensor([[0.3, -2.0, 5.0]], dtype=torch.float64), torch.randn(1, 2, dtype=torch.float64)
    exact = model.log_likelihood_given_z(x, z).detach()
    tau = dist.Gamma(torch.tensor(1.5, dtype=torch.float64), 1.5).sample((400000, 3))
    loc, scale = model.decoder(z).detach(), model.noise_scale.detach()
    per_entry = dist.Normal(loc, scale / tau.sqrt()).log_prob(x)  # (S, 3)
    monte_carlo = (torch.logsumexp(per_entry, 0) - math.log(len(tau))).sum()
    assert float(monte_carlo) == pytest.approx(float(exact), abs=0.01)


def test_the_precisions_densities_equal_torchs_gamma_of_the_expanded_parameters():
    """The model's prior and the guide's q(tau | x) compute each term at their parameters' own
    shapes (BroadcastGamma): the same log-densities and gradients as ``dist.Gamma`` of the
    parameters expanded to every entry (the former program), and the same draws at a seed."""
    from pyro import poutine
    from pyrovae.models.robust import BroadcastGamma

    torch.manual_seed(0)
    model, guide = RobustVAE(5, 2, df=3.0), RobustEncoder(5, 2, hidden_dims=(4,))
    with torch.no_grad():
        guide.raw_shape.normal_()
    x = torch.randn(7, 5)
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    tau = guide_trace.nodes["tau"]["value"]
    for trace in (guide_trace, model_trace):
        fn = trace.nodes["tau"]["fn"].base_dist
        assert isinstance(fn, BroadcastGamma) and fn.batch_shape == (7, 5)
        before = dist.Gamma(fn.concentration, fn.rate).log_prob(tau)  # the parameters expanded to every entry
        after = fn.log_prob(tau)
        assert torch.allclose(after, before, rtol=1e-6, atol=1e-6)
        params = [p for p in guide.parameters() if p.requires_grad]
        old = torch.autograd.grad(before.sum(), params, allow_unused=True, retain_graph=True)
        new = torch.autograd.grad(after.sum(), params, allow_unused=True, retain_graph=True)
        for a, b in zip(old, new):
            assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-5, atol=1e-6))
    # the draws are torch's Gamma's: the same numbers at a seed
    shape, rate = torch.rand(5) + 0.5, torch.rand(7, 5) + 0.5
    pyro.set_rng_seed(2)
    ours = BroadcastGamma(shape, rate, (7, 5)).expand((3, 7, 5)).rsample()
    pyro.set_rng_seed(2)
    assert torch.equal(ours, dist.Gamma(shape.expand(3, 7, 5), rate.expand(3, 7, 5)).rsample())


def test_the_two_log_likelihood_estimates_of_the_robust_model_agree():
    """Importance sampling z alone (tau integrated out) and the suite's estimator over (z, tau)
    estimate the same log p(x)."""
    from pyrovae import log_likelihood

    torch.manual_seed(0)
    model, guide = RobustVAE(4, 2), RobustEncoder(4, 2, hidden_dims=(8,))
    x = torch.randn(6, 4)
    pyro.set_rng_seed(0)
    z_only = log_likelihood_z_only(model, guide, x, num_samples=40000)
    both = log_likelihood(model, guide, x, num_samples=40000).per_datapoint
    torch.testing.assert_close(z_only, both.to(z_only.dtype), atol=0.05, rtol=0)


def test_the_robust_linear_vae_beats_pca_on_grossly_corrupted_data():
    """Rank 2 in D = 12, 20% of the entries replaced by outliers U(-10, 10): PCA's subspace is
    pulled away; the robust VAE's (variance per datapoint and dimension) is not."""
    g = torch.Generator().manual_seed(1)
    n, d, rank = 400, 12, 2
    a = torch.randn(d, rank, generator=g)
    x = torch.randn(n, rank, generator=g) @ a.T + 0.1 * torch.randn(n, d, generator=g)
    mask = torch.rand(n, d, generator=g) < 0.2
    x = torch.where(mask, (2 * torch.rand(n, d, generator=g) - 1) * 10, x)
    centred = x - x.mean(0)
    pca_angle = float(principal_angles(torch.linalg.svd(centred, full_matrices=False).Vh[:rank].T, a).max())
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model, guide = RobustVAE(d, rank), RobustEncoder(d, rank, hidden_dims=(32,))
    for i, lr in enumerate((3e-2, 3e-3)):  # the second fit keeps the weights the first left (init="torch")
        fit(model, guide, x, epochs=150, batch_size=n, lr=lr, progress=False, init=None if i == 0 else "torch")
    robust_angle = float(principal_angles(leading_subspace(model.weight.detach(), rank), a).max())
    assert robust_angle < 0.5 * pca_angle, (math.degrees(robust_angle), math.degrees(pca_angle))



@pytest.mark.slow
def test_the_command_line_fits_the_robust_pair_with_diagonal_noise_option_saved(tmp_path):
    """The real `pyrovae fit`: the robust pair by name, and `--noise diagonal` reaches the
    linear model's option and is saved in run.json (two fits of a second each, in fresh
    processes)."""
    import json

    from tests.cli.helpers import QUICK, pyrovae

    done = pyrovae("fit", "--model", "robust", "--guide", "robust-encoder", "--data", "digits", "--binarize", "none",
                   "--out", tmp_path / "robust", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = pyrovae("fit", "--model", "linear", "--guide", "diag", "--noise", "diagonal", "--data", "digits",
                   "--binarize", "none", "--out", tmp_path / "linear", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "linear" / "run.json").read_text())
    assert run["model"]["options"]["noise"] == "diagonal", run["model"]


def test_the_command_line_refuses_an_unknown_noise_in_one_line(tmp_path):
    from tests.cli.helpers import QUICK, pyrovae

    done = pyrovae("fit", "--model", "linear", "--guide", "diag", "--noise", "full", "--data", "digits",
                   "--out", tmp_path / "bad", *QUICK, cwd=tmp_path)
    assert done.returncode == 2 and "argument --noise: invalid choice: 'full'" in done.stderr, done.stderr
    assert "isotropic" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
