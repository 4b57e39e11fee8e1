"""The path-derivative gradient options of ``elbo`` and ``iwae`` (``gradient="stl"``: Roeder,
Wu, Duvenaud 2017; ``gradient="dreg"``: Tucker, Lawson, Gu, Maddison 2018) on the
linear-Gaussian model, where the exact posterior is known.

Expected gradients are Monte Carlo means over independent draws (a batch of R copies of the
same datapoints gives the mean of R draws; B batches give a standard error), compared
estimator against estimator, parameter by parameter, in standard errors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.guides import DiagNormalGuide, FullCovNormalGuide
from pyrovae.infer.objectives import ELBO, IWAE, RenyiBound
from pyrovae.models.linear import LinearGaussianVAE


def exact_pair(seed=0):
    """The linear-Gaussian model and a full-covariance guide set to its exact posterior."""
    torch.manual_seed(seed)
    model = LinearGaussianVAE(x_dim=5, z_dim=3, init_scale=0.5).double()
    guide = FullCovNormalGuide(x_dim=5, z_dim=3, hidden_dims=(), parametrization="cholesky",
                               offdiag_scale=1.0).double()
    with torch.no_grad():
        s2 = model.noise_scale ** 2
        S = torch.linalg.inv(torch.eye(3, dtype=torch.float64) + model.weight.T @ model.weight / s2)
        L = torch.linalg.cholesky(S)
        A = S @ model.weight.T / s2
        linear = guide.encoder[0]
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:3] = A
        linear.bias[:3] = -A @ model.bias
        linear.bias[3:6] = torch.log(torch.expm1(torch.diagonal(L) - guide.min_scale))
        linear.bias[6:] = L[guide.tril_rows, guide.tril_cols]
    return model, guide


def perturbed_pair(seed=0):
    """The same pair, the guide moved away from the posterior (a biased mean, wrong scales)."""
    model, guide = exact_pair(seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model, guide


def points(n=3):
    return torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))


def gradients(objective, model, guide, x, copies, batches, seed=0):
    """(guide gradients, model gradients): each (batches, P), one row per batch of ``copies``
    copies of every row of ``x`` (the batch mean's gradient: the mean of independent draws)."""
    pyro.set_rng_seed(seed)
    batch = {"x": x.repeat(copies, 1)}
    rows_q, rows_p = [], []
    for _ in range(batches):
        loss = objective(model, guide, batch)
        grads = torch.autograd.grad(loss, list(guide.parameters()) + list(model.parameters()))
        k = len(list(guide.parameters()))
        rows_q.append(torch.cat([g.reshape(-1) for g in grads[:k]]))
        rows_p.append(torch.cat([g.reshape(-1) for g in grads[k:]]))
    return torch.stack(rows_q), torch.stack(rows_p)


def z_scores(a, b):
    """Per parameter: (mean a - mean b) / its standard error (independent rows)."""
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    keep = se > 1e-12
    return (a.mean(0) - b.mean(0))[keep] / se[keep]


# every |z| of ~30 parameters under 4.5: a false alarm below 1e-4 per test
THRESHOLD = 4.5


@pytest.mark.parametrize("objective, other", [
    (IWAE(num_particles=5), IWAE(num_particles=5, gradient="dreg")),
    (ELBO(), ELBO(gradient="stl")),
    (ELBO(num_particles=3), ELBO(num_particles=3, gradient="stl")),
], ids=["iwae-dreg", "elbo-stl", "elbo3-stl"])
def test_expected_gradient_equals_the_plain_estimators(objective, other):
    model, guide = perturbed_pair()
    x = points()
    plain_q, plain_p = gradients(objective, model, guide, x, copies=100, batches=60, seed=1)
    new_q, new_p = gradients(other, model, guide, x, copies=100, batches=60, seed=2)
    z_q, z_p = z_scores(new_q, plain_q), z_scores(new_p, plain_p)
    assert z_q.abs().max() < THRESHOLD, z_q
    assert z_p.abs().max() < THRESHOLD, z_p
    # the test can tell: the guide's mean gradient is far from zero in standard errors
    assert (plain_q.mean(0).abs() / (plain_q.std(0) / math.sqrt(len(plain_q)) + 1e-12)).max() > 20


def test_stl_for_iwae_is_biased_and_the_test_sees_it():
    """Tucker et al. (2018, sec. 3): dropping the score term of the IWAE gradient (STL) biases
    it for K > 1, which DReG corrects; the same comparison that passes DReG flags STL."""
    model, guide = perturbed_pair()
    x = points()
    plain_q, _ = gradients(IWAE(num_particles=5), model, guide, x, copies=100, batches=60, seed=1)
    stl_q, _ = gradients(IWAE(num_particles=5, gradient="stl"), model, guide, x, copies=100, batches=60, seed=2)
    assert z_scores(stl_q, plain_q).abs().max() > 8


@pytest.mark.parametrize("objective, zero", [
    (IWAE(num_particles=5), False), (IWAE(num_particles=5, gradient="stl"), True),
    (IWAE(num_particles=5, gradient="dreg"), True), (ELBO(), False), (ELBO(gradient="stl"), True),
], ids=["iwae", "iwae-stl", "iwae-dreg", "elbo", "elbo-stl"])
def test_zero_variance_at_the_exact_posterior(objective, zero):
    """At q = p(z | x) every log-weight is log p(x): the path term vanishes on every draw, so
    STL and DReG give an encoder gradient of exactly zero, while the plain estimator keeps the
    score term (zero mean, nonzero on each draw)."""
    model, guide = exact_pair()
    grads_q, _ = gradients(objective, model, guide, points(), copies=1, batches=20, seed=3)
    largest = grads_q.abs().max()
    if zero:
        assert largest < 1e-9, largest
    else:
        assert grads_q.std(0).max() > 1e-2


def test_values_and_model_gradients_are_the_plain_ones():
    """Same draws: the loss value, and the model's gradient, do not depend on the estimator
    (DReG changes only the guide's gradient; STL too, for the ELBO and IWAE alike)."""
    model, guide = perturbed_pair()
    x = points(4)
    out = {}
    for name, objective in [("plain", IWAE(num_particles=4)), ("stl", IWAE(num_particles=4, gradient="stl")),
                            ("dreg", IWAE(num_particles=4, gradient="dreg"))]:
        pyro.set_rng_seed(5)
        loss = objective(model, guide, {"x": x})
        out[name] = (loss.detach(), torch.autograd.grad(loss, list(model.parameters())))
    for name in ("stl", "dreg"):
        torch.testing.assert_close(out[name][0], out["plain"][0], rtol=0, atol=1e-12)
        for a, b in zip(out[name][1], out["plain"][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_dreg_guide_gradient_by_hand():
    """DReG's guide gradient is sum_k w~_k^2 d/dphi log w_k with log q at stopped parameters:
    computed here by hand on the same draws (diagonal Normal guide, z = mu + sigma * eps)."""
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=4, z_dim=2, init_scale=0.7).double()
    guide = DiagNormalGuide(x_dim=4, z_dim=2, hidden_dims=()).double()
    x, k = points(3)[:, :4], 6
    pyro.set_rng_seed(11)
    loss = IWAE(num_particles=k, gradient="dreg")(model, guide, {"x": x})
    ours = torch.autograd.grad(loss, list(guide.parameters()))
    # by hand: the same noise (the guide draws eps ~ N(0, 1) of shape (K, N, 2) first)
    pyro.set_rng_seed(11)
    eps = torch.randn(k, 3, 2, dtype=torch.float64)
    q = guide.encode(x)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    z = loc + scale * eps
    q_stopped = dist.Normal(loc.detach(), scale.detach()).to_event(1)
    log_p = dist.Normal(0.0, 1.0).expand([2]).to_event(1).log_prob(z) + \
        dist.Normal(z @ model.weight.T + model.bias, model.noise_scale).to_event(1).log_prob(x)
    log_w = log_p - q_stopped.log_prob(z)
    w = torch.softmax(log_w.detach(), 0)
    surrogate = -(w ** 2 * log_w).sum(0).mean()
    expected = torch.autograd.grad(surrogate, list(guide.parameters()))
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_options_and_errors():
    assert IWAE(gradient="dreg").options.gradient == "dreg"
    assert IWAE().options.gradient == "plain" and ELBO().options.gradient == "plain"
    with pytest.raises(ValueError, match=r"unknown gradient 'dreg'; choose one of \('plain', 'stl'\)"):
        ELBO(gradient="dreg")
    with pytest.raises(ValueError, match=r"unknown gradient 'stl'; choose one of \('plain',\)"):
        from pyrovae.infer.objectives import MeanFieldELBO
        MeanFieldELBO(gradient="stl")
    with pytest.raises(ValueError, match="particle_chunk"):
        IWAE(num_particles=10, particle_chunk=2, gradient="dreg")
    assert RenyiBound.gradient == "plain"

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.3))

    for objective in (ELBO(gradient="stl"), IWAE(gradient="dreg")):
        with pytest.raises(NotImplementedError, match="site 'c' is a Bernoulli that has no rsample"):
            objective(model, guide, {"x": torch.randn(4)})


def test_fit_from_the_command_line(tmp_path):
    """``--gradient`` is a flag of ``pyrovae fit`` for elbo and iwae: recorded in the run folder,
    and an estimator an objective does not have is a one-line usage error."""
    from tests.cli.helpers import one_line_error, pyrovae

    flags = ["--epochs", "1", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "0", "--no-progress"]
    result = pyrovae("fit", "--objective", "iwae", "--particles", "50", "--gradient", "dreg", *flags,
                     "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json
    objective = json.loads((tmp_path / "run" / "run.json").read_text())["objective"]
    assert objective["gradient"] == "dreg" and objective["num_particles"] == 50
    result = pyrovae("fit", "--objective", "elbo", "--gradient", "dreg", *flags, "--out", tmp_path / "bad",
                     cwd=tmp_path)
    one_line_error(result, 2, "argument --gradient: invalid choice: 'dreg'", "'stl'")


def test_a_flow_without_inverse_is_a_one_line_error_and_invertible_ones_work():
    """STL/DReG score log q at a copy of the draw: an invertible flow (IAF) can, a planar flow
    (no inverse) cannot, and says so."""
    from pyrovae.models import VAE
    from pyrovae.registry import get_guide

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((4, 12), 0.3))
    model = VAE(12, 3, (8,))
    loss = IWAE(num_particles=3, gradient="dreg")(model, get_guide("iaf")(x_dim=12, z_dim=3, hidden_dims=(8,)),
                                                  {"x": x})
    assert torch.isfinite(loss)
    with pytest.raises(NotImplementedError, match="gradient='stl'/'dreg' evaluates log q of site 'z'.*no inverse"):
        ELBO(gradient="stl")(model, get_guide("planar")(x_dim=12, z_dim=3, hidden_dims=(8,)), {"x": x})
