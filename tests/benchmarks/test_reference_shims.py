"""benchmarks/dreg_reference.py and lvae_reference.py: their ``run`` parts need the reference code
(set up outside this repository); here the parts that run in this repository's environment: the
DReG reference's data stand-in and the scoring of its networks, and the Ladder VAE reference's
pairing of per-image figures."""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(os.environ.get("PYROVAE_DATA", "/work/shared/data"))


def _module(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_dreg_references_networks_are_scored_as_its_model_and_guide():
    mod = _module("dreg_reference")
    torch.manual_seed(0)
    sizes = {"fc1": (6, 5), "fc2": (5, 5), "fc31": (5, 2), "fc32": (5, 2), "fc4": (2, 5), "fc5": (5, 5),
             "fc6": (5, 6)}  # the reference's layer names, a 6-pixel, 2-latent miniature
    state = {}
    for layer, (i, o) in sizes.items():
        state[f"{layer}.weight"], state[f"{layer}.bias"] = torch.randn(o, i) * 0.5, torch.randn(o) * 0.5
    state["fc32.weight"], state["fc32.bias"] = state["fc32.weight"] * 0.2, torch.full((2,), 0.5)  # a wide proposal
    x = torch.bernoulli(torch.full((3, 6), 0.4))
    model, guide = mod.reference_pair(state)
    ll = mod.score(model, guide, x, 20000, 0)
    assert ll.shape == (3,)

    # the guide is the reference's encoder: ReLU layers, the scale exp(.)
    import pyro.poutine as poutine

    site = poutine.trace(guide).get_trace(x).nodes["z"]["fn"].base_dist
    h = torch.relu(torch.relu(x @ state["fc1.weight"].T + state["fc1.bias"]) @ state["fc2.weight"].T
                   + state["fc2.bias"])
    assert torch.allclose(site.loc, h @ state["fc31.weight"].T + state["fc31.bias"])
    assert torch.allclose(site.scale, (h @ state["fc32.weight"].T + state["fc32.bias"]).exp())

    # the exact log p(x) of the reference's generative model (ReLU decoder), by quadrature over z
    g = torch.linspace(-6, 6, 301)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    h = torch.relu(torch.relu(z @ state["fc4.weight"].T + state["fc4.bias"]) @ state["fc5.weight"].T
                   + state["fc5.bias"])
    logits = h @ state["fc6.weight"].T + state["fc6.bias"]
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    for n in range(3):
        log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(x[n]).sum(-1)
        exact = float(torch.logsumexp(log_prior + log_lik, 0) + 2 * math.log(float(g[1] - g[0])))
        assert abs(float(ll[n]) - exact) < 0.05, (n, float(ll[n]), exact)


def test_the_dreg_references_mnist_stand_in_gives_what_to_tensor_would(monkeypatch):
    if not (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST IDX files; set PYROVAE_DATA")
    mod = _module("dreg_reference")
    monkeypatch.setattr(mod, "DATA", str(DATA))
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.utils"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    vision = mod._torchvision_stub(train_size=300)
    assert sys.modules["torchvision.datasets"].MNIST is vision.datasets.MNIST
    train = vision.datasets.MNIST("../data", train=True, download=True, transform=vision.transforms.ToTensor())
    test = vision.datasets.MNIST("../data", train=False, transform=vision.transforms.ToTensor())
    assert len(train) == 300 and len(test) == 10000
    image, label = train[7]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and isinstance(label, int)
    from pyrovae.data import load_dataset

    ours = load_dataset("mnist", data_dir=str(DATA), binarize="none")
    assert torch.equal(image.reshape(-1), ours.train["x"][7]) and label == int(ours.train["y"][7])
    assert vision.utils.save_image(image, "nowhere.png") is None and not Path("nowhere.png").exists()


def test_the_ladder_references_figures_are_paired_per_image(tmp_path, capsys):
    mod = _module("lvae_reference")
    rng = np.random.default_rng(0)
    ref = rng.normal(-100, 5, size=40)
    gain = rng.normal(1.5, 0.3, size=40)
    with open(tmp_path / "ref.json", "w") as f:
        json.dump({"per_image": ref.tolist(), "log_px": [ref.mean(), 0.0], "train_cpu_s_per_epoch": 1.0}, f)
    with open(tmp_path / "ours.json.partial", "w") as f:
        f.write(json.dumps({"model": "ladder (hvae + ladder)", "per_datapoint": (ref + gain).tolist(),
                            "train_s": 3.0}) + "\n")
    mod.compare(["--reference", f"ladder={tmp_path / 'ref.json'}", "--ours", str(tmp_path / "ours.json.partial"),
                 "--json", str(tmp_path / "out.json")])
    with open(tmp_path / "out.json") as f:
        out = json.load(f)
    paired = out["paired"]["ladder (hvae + ladder) - ladder"]
    assert paired["mean"] == pytest.approx(gain.mean())
    assert paired["stderr"] == pytest.approx(gain.std(ddof=1) / math.sqrt(40))
    assert out["ours"]["ladder (hvae + ladder)"]["log_px"][0] == pytest.approx((ref + gain).mean())
    assert "per_image" not in out["reference"]["ladder"]


def test_the_ladder_references_idx_reader_and_test_images_are_the_suites(tmp_path, monkeypatch):
    if not (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST IDX files; set PYROVAE_DATA")
    mod = _module("lvae_reference")
    monkeypatch.setattr(mod, "DATA", str(DATA))
    monkeypatch.setenv("PYROVAE_DATA", str(DATA))
    from pyrovae.data import load_dataset

    ours = load_dataset("mnist", data_dir=str(DATA))
    images = mod._idx("train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28)
    assert np.allclose(images[:50].reshape(50, -1) / 255.0, ours.train["x"][:50].numpy())
    mod.compare(["--write-test", str(tmp_path / "test.npy"), "--num-test", "30"])
    written = np.load(tmp_path / "test.npy")
    assert written.shape == (30, 784) and set(np.unique(written)) <= {0.0, 1.0}
    assert np.array_equal(written, ours.test["x"][:30].numpy())
