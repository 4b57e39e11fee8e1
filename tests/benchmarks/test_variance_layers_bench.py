"""benchmarks/variance_layers.py's ablation of the weight noise: a variance layer whose unit
outputs its mean after the ReLU, and the swap of every variance layer of a pair for it."""
import importlib.util
import math
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # its `import _harness`
    spec = importlib.util.spec_from_file_location("variance_layers", BENCH / "variance_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_noiseless_unit_is_the_mean_of_the_relu_of_the_noisy_one(monkeypatch):
    mod = _module(monkeypatch)
    from pyrovae.nn.variance import VarianceLinear

    torch.manual_seed(0)
    x = torch.rand(4, 5)
    eps = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    density = torch.exp(-eps ** 2 / 2) / math.sqrt(2 * math.pi)
    for bias in (False, True):
        layer = VarianceLinear(5, 3, bias=bias)
        if bias:
            with torch.no_grad():
                layer.bias.copy_(torch.tensor([0.5, -0.3, 0.0]))
        quiet = mod.NoiselessVariance(5, 3, bias=bias)
        quiet.load_state_dict(layer.state_dict())
        sd = layer.output_variance(x).double().sqrt()
        m = layer.bias.double() if bias else torch.zeros(3, dtype=torch.float64)
        integrand = torch.relu(m[..., None] + sd[..., None] * eps) * density  # E relu(m + sd eps), by quadrature
        expected = torch.trapezoid(integrand, eps)
        assert torch.allclose(quiet(x).double(), expected, atol=1e-5)
        assert torch.equal(quiet(x), quiet(x))  # no draw


def test_noiseless_swaps_every_variance_layer_of_a_pair_and_keeps_its_parameters(monkeypatch):
    mod = _module(monkeypatch)
    from pyrovae.nn.variance import VarianceLinear

    sizes = {"x_dim": 12, "z_dim": 2, "hidden_dims": (6, 6)}
    noisy_model, noisy_guide = mod.build("variance-vae + variance-encoder", sizes, seed=0)
    model, guide = mod.build("noiseless variance-vae + noiseless variance-encoder", sizes, seed=0)
    for noisy, quiet in ((noisy_model, model), (noisy_guide, guide)):
        assert not any(type(m) is VarianceLinear for m in quiet.modules())
        assert sum(isinstance(m, mod.NoiselessVariance) for m in quiet.modules()) == 1
        a, b = noisy.state_dict(), quiet.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(3, 2)
    assert torch.equal(model.decoder(z), model.decoder(z))
    assert not torch.equal(noisy_model.decoder(z), noisy_model.decoder(z))
