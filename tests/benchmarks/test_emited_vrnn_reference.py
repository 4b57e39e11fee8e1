"""benchmarks/emited_vrnn_reference.py: its ``run`` part needs emited/VariationalRecurrentNeuralNetwork
(set up outside this repository); here the parts that run in this repository's environment: the
data stub's chorales and padding, and the importance-sampled scoring of the reference's VRNN."""

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(os.environ.get("PYROVAE_DATA", "/work/shared/data"))


@pytest.fixture
def mod(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # it imports pyro_dmm_example beside it
    spec = importlib.util.spec_from_file_location("emited_vrnn_reference", BENCH / "emited_vrnn_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_padding_keeps_every_chorale_and_adds_only_silent_beats(mod):
    a, b = torch.bernoulli(torch.full((1, 5, 88), 0.3)), torch.bernoulli(torch.full((1, 3, 88), 0.3))
    x, y = mod.pad_collate([(a, 0), (b, 0)])
    assert x.shape == (2, 1, 5, 88) and y.tolist() == [0, 0]
    assert torch.equal(x[0], a) and torch.equal(x[1, :, :3], b) and not x[1, :, 3:].any()


def test_the_stub_mnist_is_the_suites_chorales(mod, monkeypatch):
    if not (DATA / "bach_chorales" / "bach_chorales.npz").is_file():
        pytest.skip("no bach_chorales.npz; set PYROVAE_DATA")
    import pyro_dmm_example

    monkeypatch.setattr(pyro_dmm_example, "DATA", str(DATA))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)  # the stub goes when the test ends
    monkeypatch.setattr(torch, "manual_seed", torch.manual_seed)
    import torch.utils.data as tud

    monkeypatch.setattr(tud, "DataLoader", tud.DataLoader)
    mod.install_stubs(seed=3)
    from pyrovae.data import load_dataset

    chorales = load_dataset("bach-chorales", data_dir=str(DATA))
    for train, split in ((True, chorales.train), (False, chorales.test)):
        items = sys.modules["torchvision"].datasets.MNIST("data", train=train, download=True, transform=None)
        assert len(items) == len(split["lengths"])
        n = len(items) - 1
        assert items[n][0].shape == (1, int(split["lengths"][n]), 88)
        assert torch.equal(items[n][0][0], split["x"][n, : int(split["lengths"][n])].float())
    batch, _ = next(iter(tud.DataLoader(items, batch_size=8, shuffle=False)))  # the padding collate
    assert batch.shape == (8, 1, int(chorales.test["lengths"][:8].max()), 88)
    assert torch.manual_seed(128).initial_seed() == 3  # the script's seed is replaced by --seed


class Layout(nn.Module):
    """The reference's VRNN layout (the attribute names its model.py gives its parts), wired so that
    z changes nothing: the posterior is the prior and neither the decoder nor the GRU reads phi_z.
    Then every log-weight is the exact log p(x) of a deterministic recurrence."""

    def __init__(self, x_dim=6, h=5, z=3):
        super().__init__()
        torch.manual_seed(0)
        self.n_layers, self.h_dim = 1, h
        self.phi_x = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU())
        self.phi_z = nn.Sequential(nn.Linear(z, h), nn.ReLU())
        self.prior = nn.Sequential(nn.Linear(h, h), nn.ReLU())
        self.enc = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU())
        self.prior_mean, self.enc_mean = nn.Linear(h, z), nn.Linear(h, z)
        self.prior_std = nn.Sequential(nn.Linear(h, z), nn.Softplus())
        self.enc_std = nn.Sequential(nn.Linear(h, z), nn.Softplus())
        self.dec = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU())
        self.dec_mean = nn.Sequential(nn.Linear(h, x_dim), nn.Sigmoid())
        self.rnn = nn.GRU(2 * h, h, 1, False)
        with torch.no_grad():
            self.enc[0].weight.zero_()
            self.enc[0].weight[:, h:] = self.prior[0].weight  # enc([phi_x, h]) = prior(h)
            self.enc[0].bias.copy_(self.prior[0].bias)
            self.enc_mean.load_state_dict(self.prior_mean.state_dict())
            self.enc_std.load_state_dict(self.prior_std.state_dict())
            self.dec[0].weight[:, :h] = 0.0  # dec([phi_z, h]) reads h only
            self.rnn.weight_ih_l0[:, h:] = 0.0  # the GRU reads phi_x only

    @torch.no_grad()
    def exact(self, x):
        h = torch.zeros(1, 1, self.h_dim)
        total = 0.0
        for x_t in x:
            theta = self.dec_mean(self.dec(torch.cat([torch.zeros(1, self.h_dim), h[-1]], 1)))[0]
            total += float(torch.distributions.Bernoulli(probs=theta).log_prob(x_t).sum())
            _, h = self.rnn(torch.cat([self.phi_x(x_t[None]), torch.zeros(1, self.h_dim)], 1)[None], h)
        return total


def test_scoring_the_references_vrnn_gives_its_exact_log_likelihood_where_z_is_inert(mod, monkeypatch):
    vrnn = Layout()
    torch.manual_seed(1)
    seqs = [torch.bernoulli(torch.full((n, 6), 0.4)).numpy() for n in (4, 7)]
    monkeypatch.setattr(mod, "chorales", lambda: {"test": (seqs, torch.tensor([4, 7]))})
    ll, elbo = mod.reference_scores(vrnn, num_samples=5, seed=0)
    assert ll.shape == elbo.shape == (2,)
    for n, seq in enumerate(seqs):
        exact = vrnn.exact(torch.as_tensor(seq))
        assert math.isclose(float(ll[n]), exact, abs_tol=1e-4), (n, float(ll[n]), exact)
        assert math.isclose(float(elbo[n]), exact, abs_tol=1e-4)


def test_scoring_is_an_importance_sampled_bound_above_its_elbo(mod, monkeypatch):
    vrnn = Layout()
    torch.manual_seed(2)
    for p in vrnn.parameters():  # z matters again: the posterior, decoder and GRU all read it
        p.data.add_(0.3 * torch.randn_like(p))
    seqs = [torch.bernoulli(torch.full((6, 6), 0.4)).numpy()]
    monkeypatch.setattr(mod, "chorales", lambda: {"test": (seqs, torch.tensor([6]))})
    ll, elbo = mod.reference_scores(vrnn, num_samples=50, seed=0)
    assert float(ll[0]) > float(elbo[0])  # log-mean-exp of differing log-weights exceeds their mean
    again, _ = mod.reference_scores(vrnn, num_samples=50, seed=0)
    assert torch.equal(ll, again)  # the seed fixes the draws
