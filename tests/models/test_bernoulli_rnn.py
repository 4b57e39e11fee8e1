"""The latent-free recurrent baseline (models/vrnn.py's BernoulliRNN, the VRNN with z removed):
its exact log-likelihood equals the recursion written out with a GRU cell, padding never
counts, the suite's importance sampler returns the same figure with no latent to sample,
gradients reach every parameter, and a saved state reloads to the same figures."""

import os
from pathlib import Path

import pyro
import pytest
import torch
from torch.distributions import Bernoulli

import pyrovae  # noqa: F401
from pyrovae import fit, log_likelihood
from pyrovae.models import BernoulliRNN
from pyrovae.models.sentence import no_latents
from pyrovae.registry import options_of

SIZES = dict(x_dim=6, rnn_dim=5, feature_dim=4, hidden_dims=(7,))


def make(seed=0, **options):
    torch.manual_seed(seed)
    return BernoulliRNN(**{**SIZES, **options})


def by_hand(rnn, x, mask):
    """sum over real steps of log Bernoulli(x_t; sigmoid g(h_{t-1})), h_t = GRUCell(phi_x(x_t), h_{t-1})."""
    cell = torch.nn.GRUCell(4, 5)
    cell.load_state_dict({"weight_ih": rnn.rnn.weight_ih_l0, "weight_hh": rnn.rnn.weight_hh_l0,
                          "bias_ih": rnn.rnn.bias_ih_l0, "bias_hh": rnn.rnn.bias_hh_l0})
    total = torch.zeros(x.shape[0])
    for n in range(x.shape[0]):
        h = torch.zeros(5)
        for t in range(x.shape[1]):
            if not mask[n, t]:
                continue
            total[n] += Bernoulli(logits=rnn.decoder(h)).log_prob(x[n, t]).sum()
            h = cell(rnn.phi_x(x[n, t])[None], h[None])[0]
    return total


def test_exact_log_likelihood_is_the_recursion_and_ignores_padding():
    rnn = make(1)
    batch = rnn.example_batch(n=6, num_steps=5, seed=2)
    assert batch["lengths"].tolist() != [5] * 6  # some rows are padded
    exact = rnn.log_prob(batch["x"], batch["mask"])
    with torch.no_grad():
        assert torch.allclose(exact, by_hand(rnn, batch["x"], batch["mask"]), atol=1e-5)
    # the model's one site holds the same figure
    trace = pyro.poutine.trace(rnn).get_trace(**batch)
    samples = [name for name, site in trace.nodes.items() if site["type"] == "sample" and name != "data"]
    assert samples == ["x"] and trace.observation_nodes == ["x"]  # no latent site
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(batch["x"]), exact, atol=1e-5)
    # padding: other values after a row's end change nothing
    noisy = torch.where(batch["mask"][..., None], batch["x"], torch.ones_like(batch["x"]))
    assert not torch.equal(noisy, batch["x"])
    assert torch.allclose(rnn.log_prob(noisy, batch["mask"]), exact, atol=1e-6)
    # ... nor does the padded length: each row alone, cut to its own length, gives its figure
    for n, length in enumerate(batch["lengths"].tolist()):
        alone = rnn.log_prob(batch["x"][n:n + 1, :length])
        assert torch.allclose(alone, exact[n:n + 1], atol=1e-5)
    # ... while a real step does count, and without a mask every step counts
    changed = batch["x"].clone()
    changed[0, 4] = 1 - changed[0, 4]
    assert not torch.allclose(rnn.log_prob(changed, batch["mask"])[0], exact[0])
    full = torch.ones(6, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(rnn.log_prob(batch["x"]), by_hand(rnn, batch["x"], full), atol=1e-5)


def test_importance_sampling_without_latents_is_exact():
    rnn = make(2)
    batch = rnn.example_batch(n=5, num_steps=4, seed=3)
    est = log_likelihood(rnn, no_latents, batch, num_samples=7)
    assert torch.allclose(est.per_datapoint.float(), rnn.log_prob(batch["x"], batch["mask"]), atol=1e-5)
    assert est.elbo == pytest.approx(est.log_likelihood, abs=1e-6)


def test_gradients_reach_every_parameter_and_it_trains():
    rnn = make(3)
    batch = rnn.example_batch(n=8, num_steps=5, seed=4)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(rnn, no_latents, **batch)
    assert torch.allclose(loss, -rnn.log_prob(batch["x"], batch["mask"]).sum(), atol=1e-4)
    loss.backward()
    for name, p in rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    before = float(rnn.log_prob(batch["x"], batch["mask"]).sum())
    result = fit(rnn, no_latents, batch, epochs=5, batch_size=8, lr=1e-2, progress=False)
    assert result.metrics[-1]["train_loss"] < result.metrics[0]["train_loss"]
    assert float(rnn.log_prob(batch["x"], batch["mask"]).sum()) > before


def test_save_and_load_give_the_same_figures(tmp_path):
    rnn = make(4, activation="tanh")
    batch = rnn.example_batch(n=4, num_steps=6, seed=5)
    torch.save({"options": options_of(rnn), "state": rnn.state_dict()}, tmp_path / "rnn.pt")
    saved = torch.load(tmp_path / "rnn.pt")
    assert saved["options"]["activation"] == "tanh" and saved["options"]["rnn_dim"] == 5
    torch.manual_seed(99)
    again = BernoulliRNN(**saved["options"])
    assert not torch.allclose(again.log_prob(batch["x"], batch["mask"]), rnn.log_prob(batch["x"], batch["mask"]))
    again.load_state_dict(saved["state"])
    assert torch.equal(again.log_prob(batch["x"], batch["mask"]), rnn.log_prob(batch["x"], batch["mask"]))


def test_generate_one_step_rows_and_options():
    rnn = make()
    x = rnn.generate(num_samples=4, num_steps=9)
    assert x.shape == (4, 9, 6) and set(x.unique().tolist()) <= {0.0, 1.0}
    p = rnn.generate(num_samples=2, num_steps=3, mean=True)
    assert ((p > 0) & (p < 1)).all()
    # a 2-D x is one step per row: p(x) = Bernoulli(sigmoid g(0))
    rows = torch.bernoulli(torch.full((3, 6), 0.5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = Bernoulli(logits=rnn.decoder(torch.zeros(5))).log_prob(rows).sum(-1)
    assert torch.allclose(rnn.log_prob(rows), expected, atol=1e-6)
    with pytest.raises(ValueError, match="rnn_dim"):
        BernoulliRNN(x_dim=6, rnn_dim=0)
    with pytest.raises(ValueError, match="mask has shape"):
        rnn.log_prob(torch.zeros(2, 3, 6), torch.ones(2, 4, dtype=torch.bool))


def test_trains_on_bucketed_chorales():
    roots = [Path(r) for r in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if r]
    if not any((root / "bach_chorales").is_dir() for root in roots):
        pytest.skip("$PYROVAE_DATA has no bach_chorales/ folder")
    import dataclasses

    from pyrovae.data import load_dataset

    data = load_dataset("bach-chorales")
    small = dataclasses.replace(data, train={k: v[:16] for k, v in data.train.items()})
    rnn = make(0, x_dim=88, rnn_dim=16, feature_dim=16, hidden_dims=(16,))
    valid = {k: v[:8] for k, v in data.valid.items()}
    before = float(rnn.log_prob(valid["x"], valid["mask"]).sum())
    fit(rnn, no_latents, small.bucketed("train", batch_size=8, seed=0), epochs=3, lr=1e-2, progress=False)
    assert float(rnn.log_prob(valid["x"], valid["mask"]).sum()) > before
