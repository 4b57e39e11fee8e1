"""benchmarks/acn_reference.py: its ``train`` and ``score`` parts need johannah/ACN (set up outside
this repository); here its pure parts: the torchvision stand-in and the test images (the suite's),
the KLs, the pairing, the causality check, the argparse shim; and acn_mnist.py's ``--per-image``."""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(os.environ.get("PYROVAE_DATA", "/work/shared/data"))
needs_mnist = pytest.mark.skipif(not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists(), reason="no MNIST")


def _module(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_mnist
def test_the_reference_sees_the_suites_images(monkeypatch):
    monkeypatch.setenv("PYROVAE_DATA", str(DATA))
    mod = _module("acn_reference")
    from pyrovae.data import load_dataset

    mnist = load_dataset("mnist", data_dir=DATA)
    x, y = mod.test_images(50)
    assert torch.equal(x.reshape(50, -1), mnist.test["x"][:50].reshape(50, -1))
    assert torch.equal(y, mnist.test["y"][:50])

    saved = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    try:
        tv = mod.torchvision_stub(train_size=30, test_size=20)
        from torchvision import datasets, transforms  # the stand-in

        assert datasets is tv.datasets
        to_tensor = transforms.Compose([transforms.ToTensor(), lambda v: v])
        train = datasets.MNIST("unused", train=True, download=True, transform=to_tensor)
        test = datasets.MNIST("unused", train=False, download=True, transform=to_tensor)
        assert (len(train), len(test)) == (30, 20)
        image, label = train[3]
        assert image.shape == (1, 28, 28) and label == int(mnist.train["y"][3])
        assert set(image.unique().tolist()) <= {0.0, 1.0}
        # a new binary draw each read, around the grey image (the suite's first training rows)
        torch.manual_seed(0)
        draws = torch.stack([train[3][0] for _ in range(400)]).mean(0)
        assert (draws - mnist.train["x"][3].reshape(1, 28, 28)).abs().max() < 0.15
        assert not torch.equal(train[3][0], train[3][0]) or mnist.train["x"][3].max() == 1
        # the test split is the suite's binarized test images, the same at every read
        assert torch.equal(test[7][0], mnist.test["x"][7].reshape(1, 28, 28))
        assert torch.equal(test[7][0], test[7][0])
    finally:
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_kls_and_pairing():
    mod = _module("acn_reference")
    torch.manual_seed(0)
    mu_q, std_q = torch.randn(4, 3), torch.rand(4, 3) + 0.3
    mu_p, std_p = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, std_q),
                                              torch.distributions.Normal(mu_p, std_p)).sum(-1)
    assert torch.allclose(mod.normal_kl(mu_q, std_q, mu_p, std_p), exact, atol=1e-5)
    # a mixture of K equal components is that component: Monte Carlo around the closed form
    z = mu_q + std_q * torch.randn(200000, 4, 3)
    k3 = mod.mixture_kl(z, mu_q, std_q, mu_p[:, None].expand(4, 3, 3), std_p[:, None].expand(4, 3, 3))
    assert torch.allclose(k3, exact, atol=0.03)
    # a mixture with a component at q itself costs at most log K more than that component alone
    mixed = mod.mixture_kl(z[:2000], mu_q, std_q, torch.stack([mu_q, mu_p], 1), torch.stack([std_q, std_p], 1))
    assert (mixed <= torch.log(torch.tensor(2.0)) + 0.05).all()
    # nearest rows, nearest first
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.4, 0.0]])
    assert mod.knn_rows(torch.tensor([[0.9, 0.0]]), table, 2).tolist() == [[1, 3]]
    assert mod.paired([3.0, 5.0, 7.0], [1.0, 2.0, 3.0]) == [3.0, 0.577]
    with pytest.raises(ValueError, match="unpaired"):
        mod.paired([1.0, 2.0], [1.0])


def test_the_causality_check_finds_a_leak():
    mod = _module("acn_reference")
    z = torch.zeros(1, 2)
    shifted = lambda x, float_condition: torch.nn.functional.pad(x.flatten(2)[..., :-1], (1, 0)).view_as(x)
    assert mod.causality_gap(shifted, z) == 0.0
    assert mod.causality_gap(lambda x, float_condition: x * 2.0, z) == 2.0


def test_int_defaults_parse_as_int_and_only_within():
    mod = _module("acn_reference")
    with mod.int_defaults_parse_as_int():
        p = argparse.ArgumentParser()
        p.add_argument("--layers", default=8)
        p.add_argument("--bias", default=0.0)
        p.add_argument("--flag", action="store_true", default=False)
        args = p.parse_args(["--layers", "3", "--bias", "0.5", "--flag"])
    assert args.layers == 3 and args.bias == "0.5" and args.flag is True
    q = argparse.ArgumentParser()
    q.add_argument("--layers", default=8)
    assert q.parse_args(["--layers", "3"]).layers == "3"


def test_pair_reads_both_files(tmp_path):
    mod = _module("acn_reference")
    ours = {"acn": {"kl": [1.0, 1.0, 2.0], "reconstruction": [10.0, 12.0, 14.0]},
            "vae": {"kl": [0.0, 0.0, 0.0], "reconstruction": [12.0, 12.0, 18.0]}}
    ref = {"per_image": {"kl_mixture": [2.0, 2.0, 2.0], "kl_nearest": [3.0, 3.0, 3.0],
                         "reconstruction": [10.0, 10.0, 10.0]}}
    (tmp_path / "o.json").write_text(json.dumps(ours))
    (tmp_path / "r.json").write_text(json.dumps(ref))
    out = mod.main(["pair", str(tmp_path / "o.json"), str(tmp_path / "r.json")])
    assert out["ours_minus_reference"][0] == pytest.approx((-1 + 1 + 4) / 3, abs=1e-3)
    assert out["ours_minus_reference_nearest_prior"][0] == pytest.approx(out["ours_minus_reference"][0] - 1, abs=1e-3)
    assert out["ours_vae_minus_reference"][0] == pytest.approx((0 + 0 + 6) / 3, abs=1e-3)


@needs_mnist
def test_acn_mnist_writes_each_test_images_costs(tmp_path, monkeypatch):
    monkeypatch.setenv("PYROVAE_DATA", str(DATA))
    monkeypatch.syspath_prepend(str(BENCH))
    mod = _module("acn_mnist")
    out = mod.main(["--epochs", "1", "--train-size", "100", "--test-size", "6", "--batch-size", "50",
                    "--kl-samples", "2", "--daydreams", "1", "--steps", "1", "--figure", str(tmp_path / "f.png"),
                    "--per-image", str(tmp_path / "per.json")])
    per = json.loads((tmp_path / "per.json").read_text())
    assert set(per) == {"acn", "vae"} and all(len(per[m][k]) == 6 for m in per for k in per[m])
    cost = [a + b for a, b in zip(per["acn"]["kl"], per["acn"]["reconstruction"])]
    assert sum(cost) / 6 == pytest.approx(out["acn"]["coding_cost"][0], abs=0.01)


def test_conv_saves_a_contiguous_copy_as_old_torch_did():
    """The script's pattern in miniature: a conv's cropped output feeds a second conv and is then
    added to in place; torch >= 1.11 refuses the backward, the shim gives old torch's gradient."""
    mod = _module("acn_reference")
    torch.manual_seed(0)
    first, second = torch.nn.Conv2d(2, 4, (2, 3), padding=1), torch.nn.Conv2d(4, 4, 1)
    x, extra = torch.randn(3, 2, 5, 5), torch.randn(3, 4, 1, 1)

    def loss():
        h = first(x)[:, :, :5, :]  # cropped: a non-contiguous view
        v2h = second(h)
        h += extra
        return (h * h).sum() + (v2h * v2h).sum()

    with pytest.raises(RuntimeError, match="inplace operation"):
        loss().backward()
    first.zero_grad(), second.zero_grad()
    original = torch.nn.Conv2d._conv_forward
    with mod.conv_saves_a_contiguous_copy():
        loss().backward()
    got = [p.grad.clone() for p in (*first.parameters(), *second.parameters())]
    assert torch.nn.Conv2d._conv_forward is original  # restored
    first.zero_grad(), second.zero_grad()
    h = first(x)[:, :, :5, :]
    v2h = second(h.clone())  # what old torch saved: a copy
    h = h + extra
    ((h * h).sum() + (v2h * v2h).sum()).backward()
    for g, p in zip(got, (*first.parameters(), *second.parameters())):
        assert torch.allclose(g, p.grad, atol=1e-5)


def test_seed_everything_seeds_its_seed_and_only_within(tmp_path, monkeypatch):
    # a stand-in for the reference's utils.py: its seed_everything ignores the seed it is given
    (tmp_path / "utils.py").write_text("import torch\n\ndef seed_everything(seed=394, max_threads=2):\n"
                                       "    torch.manual_seed(394)\n    torch.set_num_threads(max_threads)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "utils", raising=False)
    mod = _module("acn_reference")
    threads = torch.get_num_threads()
    try:
        import utils

        def draw(seed):
            utils.seed_everything(seed, 1)
            return torch.rand(3)

        assert torch.equal(draw(1), draw(394))  # the script's own: --seed does nothing
        with mod.seed_everything_seeds_its_seed():
            one, default = draw(1), draw(394)
        assert not torch.equal(one, default)
        assert torch.equal(default, draw(394)) and torch.equal(one, (torch.manual_seed(1), torch.rand(3))[1])
        assert torch.equal(draw(1), draw(394))  # put back after
    finally:
        torch.set_num_threads(threads)


def test_acn_code_probes_tell_the_class_from_the_scale_and_the_ink(monkeypatch):
    """Codes whose class is in three small dimensions and whose ink is in one large one: the raw
    vote sees the ink, the standardized vote, the whitened one and the linear probe see the class,
    and the ink is read back from the codes and from their first principal axis."""
    monkeypatch.syspath_prepend(str(BENCH))
    mod = _module("acn_mnist")
    g = torch.Generator().manual_seed(0)

    def sample(n):
        y = torch.randint(0, 10, (n,), generator=g)
        centres = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
        ink = torch.rand(n, generator=g)
        codes = torch.cat([0.01 * (centres[y] + 0.05 * torch.randn(n, 3, generator=g)), 10 * ink[:, None]], 1)
        x = (torch.rand(n, 784, generator=g) < ink[:, None]).float()
        return codes, y, x

    train, train_y, train_x = sample(2000)
    test, test_y, test_x = sample(500)
    probes = mod.code_probes(train, train_y, test, test_y, train_x, test_x)
    assert probes["knn_raw"] < 0.3
    assert min(probes["knn_standardized"], probes["knn_whitened"], probes["linear_probe"]) > 0.9
    assert probes["ink_r2_from_codes"] > 0.95 and probes["ink_r2_from_first_axis"] > 0.95
    assert probes["first_axis_share_of_variance"] > 0.99
