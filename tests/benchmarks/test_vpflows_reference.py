"""benchmarks/vpflows_reference.py runs Tomczak & Welling's vae_vpflows code (kept outside this
repository, Python 2.7 and torch 1.0): here its data stand-in, its torch-0.3 compatibility, its
reading of the reference's per-image scores and its pairing, with a stand-in for the repository
whose answers are known."""

import importlib.util
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(os.environ.get("PYROVAE_DATA", "/work/shared/data"))


def load():
    spec = importlib.util.spec_from_file_location("vpflows_reference", BENCH / "vpflows_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arrays(n_train=60, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
            "train_y": rng.integers(0, 10, size=n_train).astype(np.uint8),
            "test_x": rng.integers(0, 2, size=(n_test, 784)).astype(np.uint8),
            "test_y": rng.integers(0, 10, size=n_test)}


def test_the_keras_stand_in_gives_grey_training_images_and_the_suites_binary_test_images():
    mod = load()
    data = arrays()
    modules = mod.keras_stand_in(data)
    (x_train, y_train), (x_test, y_test) = modules["keras.datasets.mnist"].load_data()
    assert modules["keras"].datasets.mnist is modules["keras.datasets.mnist"]
    assert x_train.dtype == np.uint8 and np.array_equal(x_train, data["train_x"])
    assert np.array_equal(y_train, data["train_y"]) and np.array_equal(y_test, data["test_y"])
    # the reference scales by 255 and redraws each pixel: a {0, 1} pixel is drawn as itself
    x = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
    assert np.array_equal(np.random.default_rng(1).binomial(1, x), data["test_x"])
    x_train[0, 0, 0] += 1  # a copy each call, as Keras's
    assert np.array_equal(modules["keras.datasets.mnist"].load_data()[0][0], data["train_x"])
    grey = dict(data, test_x=data["test_x"] * 0.5)
    with pytest.raises(ValueError, match="binary"):
        mod.keras_stand_in(grey)


def test_torch03_compat_gives_the_old_behaviour_and_is_undone():
    mod = load()
    x = torch.arange(12.0).reshape(3, 4) - 5
    originals = (torch.sum, torch.mean, torch.tril)
    undo = mod.torch03_compat(torch)
    try:
        total = torch.sum(x, None)
        assert total.data[0] == pytest.approx(float(x.sum())) and isinstance(total.data[0], float)
        assert torch.mean(x, dim=None).item() == pytest.approx(float(x.mean()))
        assert torch.equal(torch.sum(x, 1), x.sum(1))
        assert torch.equal(x[0], x.narrow(0, 0, 1).squeeze(0)) and torch.equal(x[-1], x[2])
        assert torch.equal(torch.tril(x, k=-1), x.tril(-1)) and torch.equal(torch.tril(x), x.tril())
        dataset = torch.utils.data.TensorDataset(x, torch.zeros(3))
        assert dataset.data_tensor is x and torch.equal(dataset.target_tensor, torch.zeros(3))
    finally:
        undo()
    with pytest.raises(IndexError):
        torch.tensor(1.0)[0]
    with pytest.raises(TypeError):
        torch.tril(x, k=-1)
    assert not hasattr(torch.utils.data.TensorDataset(x), "data_tensor")
    assert (torch.sum, torch.mean, torch.tril) == originals


STAND_IN = {
    "utils/__init__.py": "",
    "models/__init__.py": "",
    "utils/training.py": '''
        import torch
        def train_vae_VPflow(epoch, args, train_loader, model, optimizer):
            loss = 0.
            for data, _ in train_loader:
                x = torch.bernoulli(data)
                optimizer.zero_grad()
                l = torch.sum((model.w - x) ** 2, None) / x.size(0)  # torch 0.3's dim=None
                l.backward()
                optimizer.step()
                loss += l.data[0]  # torch 0.3's 1-element loss
            return model, loss, 0., 0.
        train_vae = train_vae_VPflow
    ''',
    "models/VAE_ccLinIAF.py": '''
        import numpy as np
        import torch
        def plot_histogram(x, dir, mode):
            raise RuntimeError("matplotlib")
        class VAE(torch.nn.Module):
            def __init__(self, args):
                super(VAE, self).__init__()
                self.w = torch.nn.Parameter(torch.zeros(784))
            def calculate_likelihood(self, X, dir, mode='test', S=5000):
                assert not torch.is_grad_enabled()
                ll = -X.sum(1).numpy() - np.log(S)   # a known answer that depends on S
                plot_histogram(-ll, dir, mode)
                return -np.mean(ll)
            def calculate_lower_bound(self, X_full):
                return float(X_full.sum(1).mean()) + 1.0
    ''',
    "experiment.py": '''
        import argparse
        import torch
        from keras.datasets import mnist
        from models.VAE_ccLinIAF import VAE
        from utils.training import train_vae_VPflow
        p = argparse.ArgumentParser()
        p.add_argument('--model_name'); p.add_argument('--epochs', type=int); p.add_argument('--seed', type=int)
        args = p.parse_args()
        torch.manual_seed(args.seed)
        (x_train, _), (x_test, _) = mnist.load_data()
        train = torch.from_numpy(x_train.reshape(len(x_train), -1).astype('float32') / 255.)
        test = torch.from_numpy(x_test.reshape(len(x_test), -1).astype('float32') / 255.)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train, train[:, 0]), batch_size=20)
        model = VAE(args)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        for epoch in range(1, args.epochs + 1):
            model, loss, _, _ = train_vae_VPflow(epoch, args, loader, model, optimizer)
        model.calculate_lower_bound(test)
        model.calculate_lower_bound(train)
        model.calculate_likelihood(test, 'nowhere/', mode='test')
    ''',
}


def test_run_reads_the_references_per_image_scores_with_k_samples(tmp_path, monkeypatch):
    mod = load()
    code = tmp_path / "code"
    for name, text in STAND_IN.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(textwrap.dedent(text))
    data = arrays()
    np.savez(tmp_path / "data.npz", **data)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    saved = {k: sys.modules.pop(k) for k in list(sys.modules)
             if k.split(".")[0] in ("keras", "utils", "models", "experiment")}
    try:
        mod.run(["--code", str(code), "--data", str(tmp_path / "data.npz"), "--num-samples", "10",
                 "--save", str(tmp_path / "out.json"), "--", "--model_name", "vae_ccLinIAF", "--epochs", "2",
                 "--seed", "0"])
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in ("keras", "utils", "models", "experiment")]:
            del sys.modules[k]
        sys.modules.update(saved)
    with open(tmp_path / "out.json") as f:
        out = json.load(f)
    expected = -data["test_x"].sum(1).astype(float) - math.log(10)
    assert out["per_image"] == pytest.approx(expected.tolist())
    assert out["K"] == 10 and out["test_images"] == 7 and out["commit"] == mod.COMMIT
    assert out["log_px"][0] == pytest.approx(expected.mean())
    assert out["log_px"][1] == pytest.approx(expected.std(ddof=1) / math.sqrt(7))
    assert out["test_elbo"] == pytest.approx(-(data["test_x"].sum(1).mean() + 1.0), rel=1e-6)
    assert out["train_cpu_s"] >= 0 and out["train_cpu_s_per_epoch"] == pytest.approx(out["train_cpu_s"] / 2)
    with pytest.raises(IndexError):  # the compatibility shims are undone afterwards
        torch.tensor(1.0)[0]


def test_compare_pairs_ours_with_the_reference_per_image(tmp_path):
    mod = load()
    rng = np.random.default_rng(0)
    ref = rng.normal(-95, 5, size=50)
    gain = rng.normal(-0.8, 0.4, size=50)
    with open(tmp_path / "ref.json", "w") as f:
        json.dump({"per_image": ref.tolist(), "log_px": [ref.mean(), 0.1], "K": 1000}, f)
    with open(tmp_path / "ours.json", "w") as f:
        json.dump({"fullcov": (ref + gain).tolist() + [0.0, 1.0], "diag": None}, f)  # two images more
    mod.compare(["--reference", f"ccLinIAF={tmp_path / 'ref.json'}", "--ours", str(tmp_path / "ours.json"),
                 "--json", str(tmp_path / "out.json")])
    with open(tmp_path / "out.json") as f:
        out = json.load(f)
    paired = out["paired"]["fullcov - ccLinIAF"]
    assert paired["mean"] == pytest.approx(gain.mean())
    assert paired["stderr"] == pytest.approx(gain.std(ddof=1) / math.sqrt(50))
    assert list(out["ours"]) == ["fullcov", "fullcov, first 50"] and "per_image" not in out["reference"]["ccLinIAF"]
    assert out["ours"]["fullcov, first 50"]["log_px"][0] == pytest.approx((ref + gain).mean())
    with open(tmp_path / "short.json", "w") as f:
        json.dump({"fullcov": ref[:10].tolist()}, f)
    with pytest.raises(SystemExit, match="scored 10 test images"):
        mod.compare(["--reference", f"ccLinIAF={tmp_path / 'ref.json'}", "--ours", str(tmp_path / "short.json")])


def test_write_data_gives_the_idx_training_images_and_the_suites_test_images(tmp_path, monkeypatch):
    if not (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST IDX files; set PYROVAE_DATA")
    mod = load()
    monkeypatch.setattr(mod, "DATA", str(DATA))
    from pyrovae.data import load_dataset

    mod.compare(["--write-data", str(tmp_path / "data.npz"), "--num-test", "30"])
    ours = load_dataset("mnist", data_dir=str(DATA))
    with np.load(tmp_path / "data.npz") as f:
        data = {k: f[k] for k in f.files}
    assert data["train_x"].shape == (60000, 28, 28) and data["train_x"].dtype == np.uint8
    assert np.allclose(data["train_x"][:50].reshape(50, -1) / 255.0, ours.train["x"][:50].numpy())
    assert np.array_equal(data["test_x"], ours.test["x"][:30].numpy()) and data["test_x"].dtype == np.uint8
    assert np.array_equal(data["test_y"], ours.test["y"][:30].numpy())
