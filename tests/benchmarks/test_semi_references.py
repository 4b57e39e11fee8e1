"""The parts of the conditional and semi-supervised reference comparisons that run in this
repository's environment: cvae_mnist.py's scoring of Pyro's CVAE example (its batch layout and
its one-particle estimator), the data shim of pyro_cvae_example.py, and the paired test-error
comparison of _classifier.py, and that m2_mnist.py starts from `pyrovae fit --model m2`'s defaults."""

import gzip
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their helpers (_harness, _classifier)
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_one_particle_estimator_is_exact_with_the_exact_posterior_and_a_plate_without_size():
    mod = _module("cvae_mnist")

    def model(x, y):  # z ~ N(x, 1), y ~ N(z, 1): p(y | x) = N(x, sqrt 2); a plate without a size, as the example's
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    def guide(x, y):  # the exact posterior N((x + y) / 2, sqrt(1/2))
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal((x + y) / 2, math.sqrt(0.5)))

    torch.manual_seed(0)
    data = {"x": torch.randn(7), "y": 3 * torch.randn(7)}
    est = mod.one_particle_log_likelihood(model, guide, data, num_samples=3, batch_size=4)
    exact = dist.Normal(data["x"], math.sqrt(2.0)).log_prob(data["y"])
    assert est.per_datapoint.shape == (7,) and est.num_samples == 3
    assert torch.allclose(est.per_datapoint, exact, atol=1e-5)
    assert abs(est.elbo - float(exact.mean())) < 1e-5 and torch.allclose(est.ess, torch.full((7,), 3.0))

    def wide(x, y):  # a proposal twice too wide: the bound is below, the estimate close at large K
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal((x + y) / 2, 2 * math.sqrt(0.5)))

    est = mod.one_particle_log_likelihood(model, wide, data, num_samples=2000)
    assert est.elbo < float(exact.mean()) - 0.1
    assert torch.allclose(est.per_datapoint, exact, atol=0.05)


def test_the_examples_batch_is_the_transposed_image_with_the_other_half_masked():
    mod = _module("cvae_mnist")
    images = torch.bernoulli(torch.full((3, 28, 28), 0.5))
    flat = images.reshape(3, 784)
    batch = mod.reference_batch({"x": flat[:, :392], "y": flat[:, 392:]})
    t = images.transpose(1, 2)
    assert batch["xs"].shape == batch["ys"].shape == (3, 28, 28)
    assert torch.equal(batch["xs"][:, :, :14], t[:, :, :14]) and bool((batch["xs"][:, :, 14:] == -1).all())
    assert torch.equal(batch["ys"][:, :, 14:], t[:, :, 14:]) and bool((batch["ys"][:, :, :14] == -1).all())
    # the example's left half (columns < 14 of the transposed image) is the suite's top half (rows < 14)
    assert torch.equal(batch["xs"][:, :, :14].transpose(1, 2).reshape(3, 392), flat[:, :392])


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_the_cvae_example_shim_serves_the_suites_images_transposed(tmp_path, monkeypatch):
    mod = _module("pyro_cvae_example")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    grey[:, :, :5] = 0  # always 0
    grey[:, :, -5:] = 255  # always 1
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", grey)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(6))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(2))
    binary = rng.integers(0, 2, (2, 28, 28)).astype(np.uint8)
    np.savez(tmp_path / "test.npz", images=binary)
    monkeypatch.setattr(mod, "IDX", str(tmp_path))
    monkeypatch.setattr(mod, "TEST", str(tmp_path / "test.npz"))
    monkeypatch.setattr(mod, "NUM_TRAIN", 4)

    train = mod.MNIST(train=True)
    assert len(train) == 4
    image, digit = train[1]
    t = mod.to_tensor(image)
    assert digit == 1 and t.shape == (1, 28, 28) and set(t.unique().tolist()) <= {0.0, 1.0}
    assert bool((t[0, :5, :] == 0).all()) and bool((t[0, -5:, :] == 1).all())  # transposed: columns became rows
    draws = torch.stack([mod.to_tensor(train[1][0]) for _ in range(200)]).mean(0)[0]
    assert float((draws - torch.from_numpy(grey[1].T / 255.0).float()).abs().max()) < 0.2  # redrawn at each read

    test = mod.MNIST(train=False)
    image, digit = test[1]
    assert len(test) == 2 and digit == 1
    assert torch.equal(mod.to_tensor(image)[0], torch.from_numpy(binary[1].T).float())

    grid = mod.make_grid(torch.arange(6.0).view(6, 1, 1, 1).expand(6, 1, 2, 2), nrow=4)
    assert grid.shape == (3, 4, 8) and grid[0, 0, 6] == 3 and grid[2, 2, 2] == 5 and grid[1, 2, 4] == 0


def test_the_paired_error_difference_counts_the_discordant_images():
    mod = _module("_classifier")
    a = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([0, 1, 1, 0, 0, 0], dtype=torch.bool)
    d = mod.paired_error_difference(a, b)
    assert (d["a_only"], d["b_only"]) == (2, 1)
    assert d["diff"] == pytest.approx(100 * 1 / 6)
    assert d["stderr"] == pytest.approx(100 * float(torch.tensor([1.0, 0, -1, 0, 1, 0]).std()) / math.sqrt(6))
    assert d["p"] == pytest.approx(1.0)  # 2 * (C(3,0) + C(3,1)) / 8 = 1
    lopsided = mod.paired_error_difference(torch.tensor([1] * 10 + [0] * 5).bool(), torch.zeros(15).bool())
    assert lopsided["p"] == pytest.approx(2 / 2 ** 10) and lopsided["diff"] == pytest.approx(100 * 10 / 15)
    with pytest.raises(ValueError, match="same N"):
        mod.paired_error_difference(a, b[:4])


def test_m2_mnist_defaults_are_those_of_pyrovae_fit_for_m2():
    from pyrovae.cli.fit import build_parser
    from pyrovae.models.m2 import M2
    from pyrovae.nn.layers import default_init
    from pyrovae.training.fit import default_lr

    mod = _module("m2_mnist")
    ours = mod.build_parser().parse_args([])
    fit_args = build_parser("m2", "m2", "enum").parse_args([])  # what `pyrovae fit --model m2` is told by default
    model = M2(x_dim=784)
    assert ours.alpha == fit_args.obj_alpha == 50.0 and ours.alpha_scale is None
    assert (ours.z_dim, tuple(ours.hidden_dims), ours.activation) == \
        (fit_args.opt_z_dim, tuple(fit_args.opt_hidden_dims), fit_args.opt_activation)
    assert ours.lr == (fit_args.lr or default_lr(model))
    assert ours.init == (fit_args.init or default_init(model)) == "burda"
    assert ours.batch_size == fit_args.batch_size == 100

    class Data:  # alpha_of reads only the paper's weight
        paper_alpha = 0.83

    assert mod.alpha_of(Data, ours) == 50.0
    assert mod.alpha_of(Data, mod.build_parser().parse_args(["--alpha-scale", "2"])) == pytest.approx(1.66)
    assert mod.alpha_of(Data, mod.build_parser().parse_args(["--alpha", "7"])) == 7.0
    with pytest.raises(SystemExit):  # one weight or the other
        mod.build_parser().parse_args(["--alpha", "7", "--alpha-scale", "2"])


def test_m2_mnist_repeats_sets_the_labelled_rows_per_epoch():
    from pyrovae.data.datasets import DataSet
    from pyrovae.data.semisupervised import default_repeats

    mod = _module("m2_mnist")
    g = torch.Generator().manual_seed(0)
    split = lambda n: {"x": torch.rand(n, 4, generator=g), "y": torch.arange(n) % 10}  # noqa: E731
    base = DataSet("toy", split(200), split(30), split(30), image_shape=(4,), binarize="none", num_classes=10)
    args = mod.build_parser().parse_args(["--unlabelled", "100", "--num-valid", "7"])
    assert args.repeats is None and args.baseline_steps == []
    default = mod.m2_data(base, 20, 0, args)
    assert default.repeats == default_repeats(100, 20) == 10 and len(default.valid["x"]) == 7  # the data set's floor
    args = mod.build_parser().parse_args(["--unlabelled", "100", "--repeats", "5", "--baseline-steps", "53", "90"])
    fewer = mod.m2_data(base, 20, 0, args)
    assert fewer.repeats == 5 and args.baseline_steps == [53, 90]
    assert len(fewer.train["x"]) == 100 + 5 * 20 and int(fewer.train["labelled"].sum()) == 100
    assert torch.equal(fewer.labelled_rows()["x"], default.labelled_rows()["x"])  # the same labels, only repeated less
    assert fewer.paper_alpha == pytest.approx(default.paper_alpha * 2)
