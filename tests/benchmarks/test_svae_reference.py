"""benchmarks/svae_reference.py runs the S-VAE authors' example in a scratch folder: here its
command line, its stand-in for torchvision's MNIST (on tiny IDX files, with a stand-in example
file) and its per-image estimator (on a model whose log p(x) is known) are checked."""

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "svae_reference.py"


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("svae_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_help_names_the_reference_commit_and_both_commands():
    p = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "671c46c0772a2c92a602252311864c48c816bc44" in p.stdout
    assert "{train,score}" in p.stdout


def test_the_example_runs_above_its_driver_on_the_idx_files(ref, tmp_path, monkeypatch):
    rng = np.random.RandomState(0)
    (tmp_path / "mnist").mkdir()
    images = rng.randint(0, 256, size=(7, 28, 28))
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.arange(7) % 10)
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", images[:3])
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "mnist.py").write_text(
        "import torch\nfrom torchvision import datasets, transforms\n"
        "train_loader = torch.utils.data.DataLoader(datasets.MNIST('./data', train=True, download=True,\n"
        "    transform=transforms.ToTensor()), batch_size=64, shuffle=True)\n"
        "# hidden dimension and dimension of latent space\nraise RuntimeError('the driver ran')\n")
    monkeypatch.setattr(ref, "HERE", str(tmp_path))
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # restored (or removed) after the test
    ns = ref.example(train_size=5)
    x, y = next(iter(torch.utils.data.DataLoader(ns["train_loader"].dataset, batch_size=10)))
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(x[:, 0], torch.from_numpy(images[:5] / 255.0).float())


def test_per_image_is_exact_when_the_posterior_is_the_prior_and_the_decoder_ignores_z(ref):
    class Model:
        distribution = "normal"
        logits = torch.linspace(-2, 2, 6)

        def encode(self, x):
            return torch.zeros(len(x), 2), torch.ones(len(x), 2)

        def reparameterize(self, loc, scale):
            return torch.distributions.Normal(loc, scale), torch.distributions.Normal(torch.zeros_like(loc), scale)

        def decode(self, z):
            return self.logits.expand(*z.shape[:-1], 6)

    x = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float)
    ll, elbo = ref.per_image(Model(), x, num_samples=7)
    exact = torch.distributions.Bernoulli(logits=Model.logits).log_prob(x).sum(-1)
    assert ll.shape == (3,)
    assert torch.allclose(ll, exact, atol=1e-5) and torch.allclose(elbo, exact, atol=1e-5)
