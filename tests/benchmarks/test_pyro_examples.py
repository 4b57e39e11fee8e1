"""benchmarks/pyro_vae_example.py and pyro_dmm_example.py: their ``run`` parts need Pyro's examples
(set up outside this repository); here the parts that run in this repository's environment: the
VAE's scoring of the example's networks and the DMM's data cache."""

import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_vae_examples_networks_are_scored_as_its_model_and_guide():
    mod = _module("pyro_vae_example")
    torch.manual_seed(0)
    lin = lambda i, o: {"weight": torch.randn(o, i) * 0.1, "bias": torch.randn(o) * 0.1}  # noqa: E731
    enc = {f"{layer}.{k}": v for layer, (i, o) in {"fc1": (6, 5), "fc21": (5, 2), "fc22": (5, 2)}.items()
           for k, v in lin(i, o).items()}
    dec = {f"{layer}.{k}": v for layer, (i, o) in {"fc1": (2, 5), "fc21": (5, 6)}.items() for k, v in lin(i, o).items()}
    saved = {"encoder": enc, "decoder": dec, "z_dim": 2}
    x = torch.bernoulli(torch.full((7, 6), 0.4))
    elbo1, ll, elbo_k = mod.score(*mod.reference_pair(saved), x, torch.arange(3), 4000, 0)
    assert elbo1.shape == (7,) and ll.shape == elbo_k.shape == (3,)
    assert bool((ll >= elbo_k).all())  # log-mean-exp over the draws is at least their mean

    # the exact log p(x) of the example's model, by quadrature over the 2-D latent
    g = torch.linspace(-6, 6, 301)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logits = torch.nn.functional.softplus(z @ dec["fc1.weight"].T + dec["fc1.bias"]) @ dec["fc21.weight"].T + dec["fc21.bias"]
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    for n in range(3):
        log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(x[n]).sum(-1)
        exact = float(torch.logsumexp(log_prior + log_lik, 0) + 2 * math.log(float(g[1] - g[0])))
        assert abs(float(ll[n]) - exact) < 0.05, (n, float(ll[n]), exact)


def test_the_dmm_cache_holds_the_suites_chorales_in_the_loaders_format(tmp_path, monkeypatch):
    path = Path(__import__("os").environ.get("PYROVAE_DATA", "/work/shared/data")) / "bach_chorales"
    if not (path / "bach_chorales.npz").is_file():
        pytest.skip("no bach_chorales.npz; set PYROVAE_DATA")
    mod = _module("pyro_dmm_example")
    monkeypatch.setattr(mod, "DATA", str(path.parent))
    mod.write_cache(tmp_path)
    with open(tmp_path / "jsb_chorales.pkl", "rb") as f:
        cache = pickle.load(f)
    from pyrovae.data import load_dataset

    chorales = load_dataset("bach-chorales", data_dir=str(path.parent))
    for split in ("train", "valid", "test"):
        ours = chorales.split(split)
        lengths = cache[split]["sequence_lengths"]
        assert lengths.dtype == torch.long and lengths.tolist() == ours["lengths"].tolist()
        for n in (0, len(lengths) - 1):
            seq = cache[split]["sequences"][n]
            assert seq.dtype == torch.float32 and seq.shape == (int(lengths[n]), 88)
            assert torch.equal(seq, ours["x"][n, : int(lengths[n])].float())
    assert np.isclose(sum(len(s) for s in cache["test"]["sequences"]), 3474)
