"""benchmarks/pixelcnnpp_reference.py and benchmarks/pixelvae_reference.py run reference code kept
in a scratch folder: here their loading of that code, their data and their per-image scores are
checked with stand-ins for the repositories (whose answers are known)."""

import gzip
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, commit", [("pixelcnnpp_reference", "7cb4436"),
                                          ("pixelvae_reference", "401d3aa")])
def test_help_names_the_reference_commit(name, commit):
    p = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert commit in p.stdout


# a stand-in for pixel-cnn-pp: utils.py with its Python 2 statement and a .cuda() in the loss (a
# Bernoulli-like per-pixel loss whose value is known), model.py importing it
UTILS = '''import torch
def discretized_mix_logistic_loss_1d(x, l):
    zeros = torch.zeros(x.shape).cuda()
    return -(l * 0 + zeros - (x + 1.) ** 2).sum()
def load_part_of_model(model, path):
    try:
        pass
    except Exception as e:
                print e
'''
MODEL = '''import torch
from utils import *
class PixelCNN(torch.nn.Module):
    def __init__(self, nr_resnet, nr_filters, nr_logistic_mix, input_channels):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.init_padding = None
    def forward(self, x):
        return x * 0 + self.w
'''


@pytest.fixture
def pixelcnnpp(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "utils.py").write_text(UTILS)
    (tmp_path / "code" / "model.py").write_text(MODEL)
    ref = load("pixelcnnpp_reference")
    monkeypatch.setattr(ref, "CODE", str(tmp_path / "code"))
    monkeypatch.setattr(torch.Tensor, "cuda", torch.Tensor.cuda)  # restored after the test
    for name in ("utils", "model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test (the loader adds code/)
    return ref, tmp_path


def test_pixelcnnpp_scores_each_test_image_with_the_repositorys_loss(pixelcnnpp, monkeypatch):
    ref, tmp = pixelcnnpp
    rng = np.random.RandomState(0)
    train, test = rng.randint(0, 256, (30, 28, 28)), rng.randint(0, 256, (12, 28, 28))
    write_idx(tmp / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp / "t10k-images-idx3-ubyte.gz", test)
    out = tmp / "ref.json"
    monkeypatch.setattr(sys, "argv", ["x", "--data", str(tmp), "--train-size", "20", "--test-size", "5", "--epochs",
                                      "1", "--batch-size", "10", "--out", str(out)])
    ref.main()
    result = json.loads(out.read_text())
    # the same test images as benchmarks/fashion_bits.py: a seed-0 permutation of the test file
    chosen = test[torch.randperm(12, generator=torch.Generator().manual_seed(0))[:5].numpy()]
    x = (chosen / 255. - .5) * 2.  # main.py's ToTensor and rescaling
    expected = ((x + 1.) ** 2).sum((1, 2))
    assert np.allclose(result["nll"], expected, rtol=1e-5)
    assert result["bits_per_dim"] == pytest.approx(expected.mean() / (784 * math.log(2)), rel=1e-5)


def test_pixelcnnpp_refuses_a_utils_it_was_not_written_for(pixelcnnpp):
    ref, tmp = pixelcnnpp
    (tmp / "code" / "utils.py").write_text(UTILS.replace("print e", "print(e)"))
    with pytest.raises(AssertionError, match="not the utils.py"):
        ref._load_reference()


# a stand-in for PixelVAEPytorch whose encoder returns the prior and whose decoder ignores z: every
# importance weight is p(x | z) = prod Bernoulli(x; sigmoid(b)), so -log p(x) is known exactly
PACKAGE = {
    "__init__.py": "from .mnist_model import MNISTPixelVAE\n",
    "losses.py": "def kl_unit_gaussian(mu, log_sigma):\n"
                 "    return -0.5 * (1.0 + 2.0 * log_sigma - mu ** 2 - log_sigma.exp() ** 2)\n",
    "mnist_data.py": "import torch\nclass MNISTTensorDataset(torch.utils.data.TensorDataset):\n    pass\n"
                     "def load_mnist_dataset(root, train=True, download=True):\n    raise RuntimeError('downloads')\n",
    "mnist_model.py": '''import torch
class Encoder(torch.nn.Module):
    def forward(self, x):
        return x.new_zeros(len(x), 3), x.new_zeros(len(x), 3)
class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor(0.7))
    def forward(self, z, x):
        return x * 0 + self.b
class MNISTPixelVAE(torch.nn.Module):
    def __init__(self, num_pixel_cnn_layer, decoder_algorithm, dim_pix, filter_size, latent_dim, **kw):
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()
''',
    "mnist_pixelvae_train.py": '''import sys, torch
from PixelVAEPytorch.mnist_data import load_mnist_dataset
from PixelVAEPytorch import MNISTPixelVAE
data = load_mnist_dataset("data", train=True, download=False)
model = MNISTPixelVAE(0, "upsample_z_conv", 4, 3, 3)
torch.save({"model_state_dict": model.state_dict(), "args": {"num_pixel_cnn_layer": 0,
    "decoder_algorithm": "upsample_z_conv", "dim_pix": 4, "filter_size": 3, "latent_dim": 3,
    "seen": data.tensors[0].tolist()}}, sys.argv[-1] + "/checkpoint_final.pt")
''',
}


def test_pixelvae_trains_on_the_binarized_rows_and_scores_a_known_log_likelihood(tmp_path, monkeypatch):
    (tmp_path / "PixelVAEPytorch").mkdir()
    for name, text in PACKAGE.items():
        (tmp_path / "PixelVAEPytorch" / name).write_text(text)
    rng = np.random.RandomState(0)
    splits = {s: rng.randint(0, 2, (n, 784)).astype(np.uint8) for s, n in (("train", 9), ("valid", 2), ("test", 8))}
    (tmp_path / "binarized_mnist").mkdir()
    np.savez(tmp_path / "binarized_mnist" / "binarized_mnist.npz", **splits)
    ref = load("pixelvae_reference")
    monkeypatch.setattr(ref, "HERE", str(tmp_path))
    monkeypatch.setattr(ref, "NPZ", str(tmp_path / "binarized_mnist" / "binarized_mnist.npz"))
    for name in list(sys.modules):
        if name.startswith("PixelVAEPytorch"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "run").mkdir()
    monkeypatch.setattr(sys, "argv", ["x", "train", "--train-size", "4", "--", str(tmp_path / "run")])
    ref.main()
    seen = torch.load(tmp_path / "run" / "checkpoint_final.pt")["args"]["seen"]
    assert np.array_equal(np.asarray(seen).reshape(4, 784), splits["train"][:4])

    out = tmp_path / "score.json"
    monkeypatch.setattr(sys, "argv", ["x", "score", str(tmp_path / "run"), "--test-size", "3", "--num-samples", "7",
                                      "--out", str(out)])
    ref.main()
    result = json.loads(out.read_text())
    x = torch.from_numpy(splits["test"][torch.randperm(8, generator=torch.Generator().manual_seed(0))[:3].numpy()])
    exact = -torch.distributions.Bernoulli(logits=torch.tensor(0.7)).log_prob(x.double()).sum(1)
    assert np.allclose(result["nll"], exact.numpy(), rtol=1e-5)
    assert result["kl"] == pytest.approx(0.0, abs=1e-7) and result["active_units"] == 0
    assert result["neg_elbo"] == pytest.approx(exact.mean().item(), rel=1e-5)


def test_the_collapse_benchmark_keeps_per_image_scores_and_pairs_them_with_a_reference(data_dir, tmp_path):
    """benchmarks/pixelcnn_collapse.py --reference: every row keeps its per-image -log p(x) and
    its paired difference to the reference's (ours - reference in log p(x)); --kl-warmup reaches the
    ELBO rows' objective."""
    reference = np.linspace(80.0, 120.0, 6)
    (tmp_path / "ref.json").write_text(json.dumps({"nll": reference.tolist()}))
    out = tmp_path / "collapse.json"
    p = subprocess.run([sys.executable, str(BENCH / "pixelcnn_collapse.py"), "--data-dir", str(data_dir),
                        "--rows", "pixelcnn-vae local spatial elbo;pixelcnn-vae local elbo", "--epochs", "1",
                        "--train-size", "20", "--batch-size", "10", "--test-size", "6", "--num-samples", "3",
                        "--num-layers", "1", "--channels", "4", "--device", "cpu", "--kl-warmup", "5",
                        "--reference", str(tmp_path / "ref.json"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        nll = np.asarray(row["nll"])
        assert nll.shape == (6,) and np.all(np.isfinite(nll))
        assert row["test_nll"] == pytest.approx(nll.mean(), rel=1e-6)
        d = reference - nll  # log p(x): ours - reference
        assert row["vs_reference"]["mean"] == pytest.approx(d.mean(), rel=1e-6)
        assert row["vs_reference"]["stderr"] == pytest.approx(d.std(ddof=1) / math.sqrt(6), rel=1e-6)
        assert row["options"] == {"warmup_steps": 5} and row["train_cpu_seconds"] > 0
    assert "vs reference" in p.stdout


def test_the_collapse_benchmark_refuses_a_reference_on_other_images(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports _harness
    collapse = load("pixelcnn_collapse")
    (tmp_path / "ref.json").write_text(json.dumps({"nll": [90.0] * 5}))
    with pytest.raises(ValueError, match="5 test images, this run 6"):
        collapse.read_reference(tmp_path / "ref.json", 6)
    (tmp_path / "bare.json").write_text(json.dumps({"test_nll": 90.0}))
    with pytest.raises(ValueError, match="no per-image 'nll'"):
        collapse.read_reference(tmp_path / "bare.json", 6)
