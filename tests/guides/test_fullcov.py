"""The full-covariance guide: a valid Cholesky factor, the closed-form MVN density (scipy),
the particle plate, the exact posterior of a linear-Gaussian model, and training."""

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import multivariate_normal

from pyrovae import fit
from pyrovae.evaluation.log_likelihood import log_likelihood
from pyrovae.guides import FullCovNormalGuide
from pyrovae.models import VAE
from pyrovae.models.linear import LinearGaussianVAE
from pyrovae.infer.objectives import IWAE
from pyrovae.infer.importance import log_weights

from tests.contract import check_trains_and_improves


PARAMETRIZATIONS = ["cholesky", "relative"]


def make_guide(z_dim=4, seed=0, parametrization="cholesky"):
    torch.manual_seed(seed)
    guide = FullCovNormalGuide(x_dim=6, z_dim=z_dim, hidden_dims=(8,), parametrization=parametrization).double()
    with torch.no_grad():
        for p in guide.parameters():
            p.normal_(0.0, 0.3)
    return guide


def data(n=5):
    return torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("z_dim", [1, 2, 4])
def test_scale_tril_is_a_valid_cholesky_factor(z_dim, parametrization):
    guide = make_guide(z_dim, parametrization=parametrization)
    L = guide.encode(data()).scale_tril  # (N, z, z)
    assert L.shape == (5, z_dim, z_dim)
    assert torch.count_nonzero(torch.triu(L, 1)) == 0
    assert (torch.diagonal(L, dim1=-2, dim2=-1) > 0).all()
    if z_dim > 1:  # the off-diagonal outputs are used
        assert torch.count_nonzero(torch.tril(L, -1)) == 5 * z_dim * (z_dim - 1) // 2
    # the Cholesky factor with positive diagonal is unique: L L^T factors back to L
    torch.testing.assert_close(torch.linalg.cholesky(L @ L.mT), L, rtol=0, atol=1e-10)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_an_untrained_guide_is_diagonal(parametrization):
    guide = FullCovNormalGuide(x_dim=6, z_dim=4, hidden_dims=(8,), parametrization=parametrization).double()
    L = guide.encode(data()).scale_tril
    assert torch.count_nonzero(torch.tril(L, -1)) == 0
    loss = guide.encode(data()).rsample().pow(2).sum()
    loss.backward()  # but the off-diagonal outputs do learn
    assert guide.encoder[-1].weight.grad[8:].abs().sum() > 0


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_diagonal_is_softplus_of_the_encoder_output_plus_floor(parametrization):
    guide = make_guide(3, parametrization=parametrization)
    x = data()
    out = guide.encoder(x)
    L = guide.encode(x).scale_tril
    expected = F.softplus(out[:, 3:6]) + guide.min_scale
    torch.testing.assert_close(torch.diagonal(L, dim1=-2, dim2=-1), expected)


@pytest.mark.parametrize("offdiag_scale", [0.1, 1.0, 2.5])
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_off_diagonal_entries_by_parametrization(parametrization, offdiag_scale):
    """cholesky: L_ij = c m_ij; relative: L_ij = sigma_i c m_ij (row i scaled by its own
    scale), entry by entry from the encoder's outputs m and offdiag_scale c."""
    x = data()
    torch.manual_seed(0)
    guide = FullCovNormalGuide(x_dim=6, z_dim=3, hidden_dims=(8,), parametrization=parametrization,
                               offdiag_scale=offdiag_scale).double()
    with torch.no_grad():
        for p in guide.parameters():
            p.normal_(0.0, 0.3)
    out = guide.encoder(x)  # (5, 3 + 3 + 3): loc, raw diagonal, m_10, m_20, m_21
    L = guide.encode(x).scale_tril
    sigma = F.softplus(out[:, 3:6]) + guide.min_scale
    for k, (i, j) in enumerate([(1, 0), (2, 0), (2, 1)]):
        expected = offdiag_scale * out[:, 6 + k] * (sigma[:, i] if parametrization == "relative" else 1.0)
        torch.testing.assert_close(L[:, i, j], expected, rtol=0, atol=1e-12)


def test_defaults_and_bad_offdiag_scale():
    options = FullCovNormalGuide(x_dim=6, z_dim=3).options
    assert (options.parametrization, options.offdiag_scale) == ("relative", 0.1)
    with pytest.raises(ValueError, match="offdiag_scale must be positive, got 0"):
        FullCovNormalGuide(x_dim=6, z_dim=3, offdiag_scale=0)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_log_prob_is_the_closed_form_mvn_density(parametrization):
    guide, x = make_guide(4, parametrization=parametrization), data()
    q = guide.encode(x)
    z = torch.randn(3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    log_q = q.log_prob(z)  # (3, 5)
    for n in range(5):
        loc, L = q.loc[n].detach().numpy(), q.scale_tril[n].detach().numpy()
        expected = multivariate_normal(loc, L @ L.T).logpdf(z[:, n].numpy())
        np.testing.assert_allclose(log_q[:, n].detach().numpy(), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_under_the_particle_plate(parametrization):
    guide, x = make_guide(3, parametrization=parametrization), data()
    with pyro.plate("_num_particles", 4, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    trace.compute_log_prob()
    z, log_q = trace.nodes["z"]["value"], trace.nodes["z"]["log_prob"]
    assert z.shape == (4, 5, 3) and log_q.shape == (4, 5)
    q = guide.encode(x)
    L = q.scale_tril.detach().numpy()
    for k in range(4):
        for n in range(5):
            expected = multivariate_normal(q.loc[n].detach().numpy(), L[n] @ L[n].T).logpdf(z[k, n].detach().numpy())
            assert abs(log_q[k, n].item() - expected) < 1e-9


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_represents_the_exact_posterior_of_a_linear_gaussian_model(parametrization):
    """With a linear encoder set by hand to the exact posterior N(mu(x), S) of the
    linear-Gaussian model, every importance weight equals p(x): log w = log p(x) exactly
    (zero variance), which a diagonal guide cannot reach when S is not diagonal."""
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=5, z_dim=3, init_scale=0.5).double()
    guide = FullCovNormalGuide(x_dim=5, z_dim=3, hidden_dims=(), parametrization=parametrization).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    with torch.no_grad():
        s2 = model.noise_scale ** 2
        S = torch.linalg.inv(torch.eye(3, dtype=torch.float64) + model.weight.T @ model.weight / s2)
        assert torch.tril(S, -1).abs().max() > 0.01  # a correlated posterior
        L = torch.linalg.cholesky(S)
        A = S @ model.weight.T / s2  # mu(x) = A (x - b)
        linear = guide.encoder[0]
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:3] = A
        linear.bias[:3] = -A @ model.bias
        linear.bias[3:6] = torch.log(torch.expm1(torch.diagonal(L) - guide.min_scale))  # softplus^-1
        offdiag = L[guide.tril_rows, guide.tril_cols]
        if parametrization == "relative":  # L = diag(sigma) (I + M): M_ij = L_ij / L_ii
            offdiag = offdiag / torch.diagonal(L)[guide.tril_rows]
        linear.bias[6:] = offdiag / guide.offdiag_scale
    log_w = log_weights(model, guide, {"x": x}, num_particles=7)  # (7, 6)
    torch.testing.assert_close(log_w, model.log_marginal(x).expand(7, 6), rtol=0, atol=1e-9)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_elbo_and_iwae(objective, parametrization):
    torch.manual_seed(0)
    check_trains_and_improves(VAE(12, 3, (16,)), FullCovNormalGuide(12, 3, (16,), parametrization=parametrization),
                              objective)
