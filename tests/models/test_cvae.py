"""The conditional VAE (models/cvae.py), its data set mnist-halves, and the defining math: the
importance-sampled estimator gives log p(y | x) of a conditional pair, checked against the
closed form of a linear-Gaussian conditional model."""

import gzip
import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyrovae import fit, log_likelihood, log_weights
from pyrovae.data.datasets import load_dataset
from pyrovae.data.halves import HalvesDataSet, join_halves
from pyrovae.guides.cvae import CVAEGuide
from pyrovae.infer.importance import latent_sites, observed_sites
from pyrovae.infer.objectives import make_objective
from pyrovae.models.cvae import CVAE, HybridObjective
from tests.cli.helpers import pyrovae

# ---------------------------------------------------------------- the defining math: log p(y | x)

DX, DZ, DY, N = 3, 2, 4, 20


def linear_gaussian_pair():
    """z | x ~ N(A x + a, diag(s^2)), y | x, z ~ N(C z + D x + c, r^2 I): the model, the exact
    posterior guide q(z | x, y) = p(z | x, y), and the closed form of log p(y | x)."""
    g = torch.Generator().manual_seed(0)
    A, a, s = torch.randn(DZ, DX, generator=g), torch.randn(DZ, generator=g), 0.5 + torch.rand(DZ, generator=g)
    C, D, c, r = torch.randn(DY, DZ, generator=g), torch.randn(DY, DX, generator=g), torch.randn(DY, generator=g), 0.7

    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x @ A.T + a, s).to_event(1))
            pyro.sample("y", dist.Normal(z @ C.T + x @ D.T + c, r).to_event(1), obs=y)

    prior_precision = torch.diag(s ** -2)
    post_cov = torch.linalg.inv(prior_precision + C.T @ C / r ** 2)

    def posterior_loc(x, y):
        return ((x @ A.T + a) @ prior_precision + (y - x @ D.T - c) @ C / r ** 2) @ post_cov  # (N, DZ)

    def exact_guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(posterior_loc(x, y), covariance_matrix=post_cov))

    def broad_guide(x, y):  # the right mean, a covariance 1.5 times too wide: an imperfect proposal
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(posterior_loc(x, y), covariance_matrix=1.5 * post_cov))

    def exact(x, y):
        loc = (x @ A.T + a) @ C.T + x @ D.T + c
        cov = C @ torch.diag(s ** 2) @ C.T + r ** 2 * torch.eye(DY)
        return dist.MultivariateNormal(loc, covariance_matrix=cov).log_prob(y)

    return model, exact_guide, broad_guide, exact


def conditional_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, DX, generator=g), 2 * torch.randn(N, DY, generator=g)


def test_log_likelihood_of_a_conditional_pair_is_log_p_y_given_x_in_closed_form():
    """With the exact posterior as proposal every log-weight log p(y, z | x) - log q(z | x, y)
    equals log p(y | x): the estimate is the closed form per datapoint, whatever K."""
    model, exact_guide, _, exact = linear_gaussian_pair()
    x, y = conditional_data()
    est = log_likelihood(model, exact_guide, {"x": x, "y": y}, num_samples=7)
    torch.testing.assert_close(est.per_datapoint, exact(x, y).double(), atol=1e-4, rtol=0)
    assert est.ess.min() > 7 - 1e-3  # all weights equal


def test_log_likelihood_with_an_imperfect_guide_converges_to_log_p_y_given_x():
    """A wider proposal: single log-weights spread (the ELBO is below the truth) but K = 2000
    importance samples recover log p(y | x) per datapoint."""
    model, _, broad_guide, exact = linear_gaussian_pair()
    x, y = conditional_data()
    truth = exact(x, y).double()
    est = log_likelihood(model, broad_guide, {"x": x, "y": y}, num_samples=2000)
    assert est.elbo < float(truth.mean()) - 0.05
    torch.testing.assert_close(est.per_datapoint, truth, atol=0.02, rtol=0)


def test_the_cvae_log_weights_are_log_p_y_given_x_z_plus_log_p_z_given_x_minus_log_q():
    """The registered model's log-weights, recomputed by hand from its networks: the prior
    network p(z | x) (which depends on x), the generation network p(y | x, z), the recognition
    network q(z | x, y)."""
    torch.manual_seed(0)
    model, guide = CVAE(x_dim=6, y_dim=4, z_dim=3, hidden_dims=(8,)), CVAEGuide(x_dim=6, y_dim=4, z_dim=3, hidden_dims=(8,))
    x, y = torch.randn(5, 6), torch.bernoulli(torch.full((5, 4), 0.5))
    with torch.no_grad():
        log_w, guide_trace, _ = log_weights(model, guide, {"x": x, "y": y}, 3, return_traces=True)
        z = guide_trace.nodes["z"]["value"]  # (3, 5, 3)
        by_hand = (model.likelihood(x, z).log_prob(y) + model.prior(x).log_prob(z)
                   - guide.encode(x, y).log_prob(z))
    torch.testing.assert_close(log_w, by_hand)
    # the prior depends on x: another input moves it
    assert not torch.allclose(model.prior(x).mean, model.prior(x + 1).mean)


def test_the_deterministic_baseline_has_no_latent_and_an_exact_log_likelihood():
    torch.manual_seed(0)
    options = dict(x_dim=6, y_dim=4, hidden_dims=(8,), deterministic=True)
    model, guide = CVAE(**options), CVAEGuide(**options)
    assert not list(guide.parameters())
    x, y = torch.randn(5, 6), torch.bernoulli(torch.full((5, 4), 0.5))
    trace = poutine.trace(model).get_trace(x, y)
    assert not latent_sites(trace) and [site["name"] for site in observed_sites(trace)] == ["y"]
    est = log_likelihood(model, guide, {"x": x, "y": y}, num_samples=3)
    with torch.no_grad():
        exact = model.likelihood(x).log_prob(y)
    torch.testing.assert_close(est.per_datapoint, exact.double())
    with pytest.raises(ValueError, match="no latent z"):
        model.prior(x)


def test_the_hybrid_objective_is_the_elbo_at_alpha_1_and_the_gsnn_at_alpha_0():
    """Sohn et al.'s eq. 9: alpha * ELBO + (1 - alpha) * E_{p(z|x)} log p(y | x, z), per datapoint."""
    torch.manual_seed(0)
    model, guide = CVAE(x_dim=6, y_dim=4, z_dim=3, hidden_dims=(8,)), CVAEGuide(x_dim=6, y_dim=4, z_dim=3, hidden_dims=(8,))
    batch = {"x": torch.randn(5, 6), "y": torch.bernoulli(torch.full((5, 4), 0.5))}
    losses = {}
    for alpha in (0.0, 0.3, 1.0):
        pyro.set_rng_seed(3)
        losses[alpha] = HybridObjective(alpha=alpha)(model, guide, batch, 0)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(losses[1.0], make_objective("elbo")(model, guide, batch, 0))
    pyro.set_rng_seed(3)
    with torch.no_grad():
        z = model.prior(batch["x"]).rsample()
        gsnn = model.likelihood(batch["x"], z).log_prob(batch["y"]).mean()
    torch.testing.assert_close(losses[0.0].detach(), -gsnn)
    losses[0.0].backward()  # the GSNN term trains the prior network through the reparameterized z
    assert model.prior_net[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="alpha"):
        HybridObjective(alpha=1.5)


def test_both_train_from_python_and_improve():
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((64, 6), 0.5), generator=g)
    y = torch.cat([x[:, :3], 1 - x[:, :1]], -1)  # y is a function of x
    for deterministic in (False, True):
        torch.manual_seed(0)
        options = dict(x_dim=6, y_dim=4, z_dim=2, hidden_dims=(16,), deterministic=deterministic)
        model, guide = CVAE(**options), CVAEGuide(**options)
        before = log_likelihood(model, guide, {"x": x, "y": y}, num_samples=10).log_likelihood
        fit(model, guide, {"x": x, "y": y}, epochs=20, batch_size=16, lr=1e-2, progress=False)
        after = log_likelihood(model, guide, {"x": x, "y": y}, num_samples=10).log_likelihood
        assert after > before + 1.0, (deterministic, before, after)


def test_complete_shapes_and_variety():
    torch.manual_seed(0)
    model = CVAE(x_dim=6, y_dim=4, z_dim=2, hidden_dims=(8,))
    out = model.complete(torch.zeros(3, 6), num_samples=5)
    assert out.shape == (5, 3, 4) and ((out >= 0) & (out <= 1)).all()
    assert not torch.allclose(out[0], out[1])  # several z give several completions
    binary = model.complete(torch.zeros(3, 6), num_samples=2, mean=False)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    base = CVAE(x_dim=6, y_dim=4, hidden_dims=(8,), deterministic=True).complete(torch.zeros(3, 6), 4)
    assert base.shape == (4, 3, 4)


def test_options_are_checked():
    assert CVAE(x_dim=5).options.y_dim == 5
    with pytest.raises(ValueError, match="y_dim"):
        CVAE(x_dim=5, y_dim=0)


# ---------------------------------------------------------------- mnist-halves


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_mnist(folder, num_train=40, num_test=12):
    """Small MNIST-format files: random 28x28 grey digits."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for part, n in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", rng.randint(0, 10, n))
    return folder


def test_mnist_halves_cuts_mnist_in_two(tmp_path):
    fake_mnist(tmp_path / "mnist")
    halves = load_dataset("mnist-halves", data_dir=tmp_path)
    whole = load_dataset("mnist", data_dir=tmp_path, valid_size=8)
    assert isinstance(halves, HalvesDataSet) and halves.dims() == {"x_dim": 392, "y_dim": 392}
    assert halves.image_shape == (14, 28) and halves.binarize == "dynamic"
    assert [len(halves.train["x"]), len(halves.valid["x"]), len(halves.test["x"])] == [32, 8, 12]  # a fifth
    for split in ("valid", "test"):  # the same binary draw as mnist's, cut at row 14
        torch.testing.assert_close(join_halves(getattr(halves, split)["x"], getattr(halves, split)["y"]),
                                   getattr(whole, split)["x"])
    torch.testing.assert_close(join_halves(halves.train["x"], halves.train["y"]), whole.train["x"])  # grey
    batch = halves.transform({k: v[:5] for k, v in halves.train.items()}, torch.Generator().manual_seed(0))
    for key in ("x", "y"):
        assert set(batch[key].unique().tolist()) <= {0.0, 1.0}
    static = load_dataset("mnist-halves", data_dir=tmp_path, binarize="static", valid_size=4)
    assert len(static.valid["x"]) == 4 and set(static.train["y"].unique().tolist()) <= {0.0, 1.0}


def test_mnist_halves_real_files(data_dir):
    halves = load_dataset("mnist-halves", data_dir=data_dir)
    assert [len(halves.train["x"]), len(halves.valid["x"]), len(halves.test["x"])] == [50000, 10000, 10000]
    assert halves.dims() == {"x_dim": 392, "y_dim": 392}


# ---------------------------------------------------------------- the command line


QUICK = ["--data", "mnist-halves", "--epochs", "1", "--z-dim", "2", "--hidden-dims", "8", "--eval-samples", "5",
         "--no-progress", "--batch-size", "16"]


def test_cli_fit_then_evaluate(tmp_path):
    """pyrovae fit --model cvae --guide cvae --data mnist-halves, then pyrovae evaluate of the
    run, in fresh processes, on small MNIST-format files."""
    fake_mnist(tmp_path / "data" / "mnist")
    done = pyrovae("fit", "--model", "cvae", "--guide", "cvae", *QUICK, "--data-dir", tmp_path / "data",
                   "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["y_dim"] == 392 and saved["guide"]["options"]["y_dim"] == 392
    done = pyrovae("evaluate", tmp_path / "run", "--num-samples", "20", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["num_datapoints"] == 12 and math.isfinite(result["log_likelihood"]) and result["log_likelihood"] < 0


@pytest.mark.slow
def test_cli_diagnose_and_the_baseline(tmp_path):
    """pyrovae diagnose of a CVAE run writes its report; the baseline (--deterministic) fits and
    evaluates exactly (equal weights), and its diagnose refuses in one line."""
    fake_mnist(tmp_path / "data" / "mnist")
    quick = [*QUICK, "--data-dir", tmp_path / "data"]
    done = pyrovae("fit", "--model", "cvae", "--guide", "cvae", *quick, "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = pyrovae("diagnose", tmp_path / "run", "--num-samples", "10", "--idata-draws", "5", "--gap-datapoints", "4",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "report.md").is_file()

    done = pyrovae("fit", "--model", "cvae", "--guide", "cvae", "--deterministic", *quick, "--out", tmp_path / "base",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = pyrovae("evaluate", tmp_path / "base", "--num-samples", "3", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ess_mean"] == pytest.approx(3.0, rel=1e-3)  # exact: equal weights
    done = pyrovae("diagnose", tmp_path / "base", "--num-samples", "10", cwd=tmp_path)
    assert done.returncode == 1 and "samples no latent site" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

    done = pyrovae("fit", "--model", "cvae", "--guide", "cvae", "--objective", "cvae-hybrid", "--alpha", "0.5", *quick,
                   "--out", tmp_path / "hybrid", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "hybrid" / "run.json").read_text())["objective"]["alpha"] == 0.5


def test_a_z_only_generator_reads_z_alone_and_trains():
    """generator_sees_x=False (Pyro's example's generation network): p(y | z) does not move with
    x given z, x reaches y through p(z | x) only; the pair trains; the baseline refuses it."""
    torch.manual_seed(0)
    options = dict(x_dim=6, y_dim=4, z_dim=2, hidden_dims=(16,))
    model = CVAE(**options, generator_sees_x=False)
    assert model.generator[0].in_features == 2 and CVAE(**options).generator[0].in_features == 8
    z = torch.randn(3, 2)
    a, b = model.likelihood(torch.zeros(3, 6), z), model.likelihood(torch.ones(3, 6), z)
    assert torch.equal(a.base_dist.logits, b.base_dist.logits)
    assert not torch.equal(model.prior(torch.zeros(3, 6)).mean, model.prior(torch.ones(3, 6)).mean)
    x = (torch.rand(64, 6) < 0.5).float()
    y = x[:, :4].flip(-1)
    guide = CVAEGuide(**options)
    before = log_likelihood(model, guide, {"x": x, "y": y}, num_samples=10).log_likelihood
    fit(model, guide, {"x": x, "y": y}, epochs=80, batch_size=16, lr=1e-2, progress=False)
    assert log_likelihood(model, guide, {"x": x, "y": y}, num_samples=10).log_likelihood > before + 1.0
    with pytest.raises(ValueError, match="generator_sees_x"):
        CVAE(**options, deterministic=True, generator_sees_x=False)
