"""The VRNN (Chung et al. 2015): with T = 1 its log-weights are a VAE's, computed here by hand;
for T > 1 they follow the recursion (prior from h_{t-1}, h_t fed by x_t and z_t), masked steps
left out, padding never counted; ``generate`` draws what the model's own trace draws (z_t from
the recurrent prior); it trains on the length-bucketed chorales."""

import dataclasses
import os
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Bernoulli, Normal

import pyrovae  # noqa: F401
from pyrovae import fit, log_weights
from pyrovae.guides import VRNNGuide
from pyrovae.models import VRNN

SIZES = dict(x_dim=6, z_dim=3, rnn_dim=5, feature_dim=4, hidden_dims=(7,))


def pair(seed=0):
    torch.manual_seed(seed)
    return VRNN(**SIZES), VRNNGuide(**SIZES)


def weights_and_latents(model, guide, batch, k=4, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        log_w, guide_trace, _ = log_weights(model, guide, batch, k, return_traces=True)
    latents = {name: site["value"] for name, site in guide_trace.nodes.items() if name.startswith("z_")}
    return log_w, latents


def test_one_step_is_a_vae_whose_log_weights_are_computed_by_hand():
    model, guide = pair()
    x = torch.bernoulli(torch.full((8, 6), 0.4), generator=torch.Generator().manual_seed(1))
    log_w, z = weights_and_latents(model, guide, {"x": x}, k=5)
    z = z["z_0"]  # (K, N, Z)
    assert log_w.shape == (5, 8) and z.shape == (5, 8, 3)
    with torch.no_grad():
        zeros = torch.zeros(5)  # h_0 = g_0 = 0
        q_out = guide.encoder(torch.cat([guide.recurrence.phi_x(x), zeros.expand(8, 5)], -1))
        q = Normal(q_out[:, :3], torch.nn.functional.softplus(q_out[:, 3:]) + 1e-4)
        p_out = model.prior_net(zeros)
        p = Normal(p_out[:3], torch.nn.functional.softplus(p_out[3:]) + 1e-4)
        logits = model.decoder(torch.cat([model.recurrence.phi_z(z), zeros.expand(5, 8, 5)], -1))
        by_hand = p.log_prob(z).sum(-1) + Bernoulli(logits=logits).log_prob(x).sum(-1) - q.log_prob(z).sum(-1)
    assert torch.allclose(log_w, by_hand, atol=1e-5)


def recursion(model, guide, x, mask, z):
    """log p(x, z) - log q(z | x) by the recursion of Chung et al., summed over the real steps."""
    K, N = z["z_0"].shape[:2]
    h, g = torch.zeros(K, N, 5), torch.zeros(K, N, 5)
    total = torch.zeros(K, N)
    for t in range(x.shape[1]):
        zt, xt = z[f"z_{t}"], x[:, t].expand(K, N, 6)
        fx_q = guide.recurrence.phi_x(xt)
        q_out = guide.encoder(torch.cat([fx_q, g], -1))
        log_q = Normal(q_out[..., :3], torch.nn.functional.softplus(q_out[..., 3:]) + 1e-4).log_prob(zt).sum(-1)
        p_out = model.prior_net(h)
        log_p = Normal(p_out[..., :3], torch.nn.functional.softplus(p_out[..., 3:]) + 1e-4).log_prob(zt).sum(-1)
        fz = model.recurrence.phi_z(zt)
        log_x = Bernoulli(logits=model.decoder(torch.cat([fz, h], -1))).log_prob(xt).sum(-1)
        total = total + torch.where(mask[:, t], log_p + log_x - log_q, torch.zeros(()))
        h = model.recurrence.cell(torch.cat([model.recurrence.phi_x(xt), fz], -1).reshape(K * N, -1),
                                  h.reshape(K * N, -1)).reshape(K, N, 5)
        g = guide.recurrence.cell(torch.cat([fx_q, guide.recurrence.phi_z(zt)], -1).reshape(K * N, -1),
                                  g.reshape(K * N, -1)).reshape(K, N, 5)
    return total


def test_sequence_log_weights_follow_the_recursion_and_ignore_padding():
    model, guide = pair(1)
    batch = model.example_batch(n=6, num_steps=4, seed=2)
    assert batch["lengths"].tolist() != [4] * 6  # some rows are padded
    log_w, z = weights_and_latents(model, guide, batch, k=3, seed=5)
    with torch.no_grad():
        by_hand = recursion(model, guide, batch["x"], batch["mask"], z)
    assert torch.allclose(log_w, by_hand, atol=1e-4)

    # padding: other values after a row's end change nothing (the same draws, seed 5)
    noisy = dict(batch, x=torch.where(batch["mask"][..., None], batch["x"], torch.ones_like(batch["x"])))
    assert not torch.equal(noisy["x"], batch["x"])
    assert torch.allclose(weights_and_latents(model, guide, noisy, k=3, seed=5)[0], log_w, atol=1e-6)
    # ... while a real step does count
    changed = dict(batch, x=batch["x"].clone())
    changed["x"][0, 0] = 1 - changed["x"][0, 0]
    assert not torch.allclose(weights_and_latents(model, guide, changed, k=3, seed=5)[0][:, 0], log_w[:, 0])
    # without a mask every step counts
    unmasked = weights_and_latents(model, guide, {"x": batch["x"]}, k=3, seed=5)[0]
    with torch.no_grad():
        full = recursion(model, guide, batch["x"], torch.ones(6, 4, dtype=torch.bool),
                         weights_and_latents(model, guide, {"x": batch["x"]}, k=3, seed=5)[1])
    assert torch.allclose(unmasked, full, atol=1e-4)


def test_generate_and_options():
    model, _ = pair()
    x = model.generate(num_samples=4, num_steps=9)
    assert x.shape == (4, 9, 6) and set(x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="rnn_dim"):
        VRNN(x_dim=6, rnn_dim=0)
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        model(torch.zeros(2, 3, 4, 6))


def ancestral_draws(model, num_samples, num_steps, z_prior=None):
    """Key probabilities ``(num_samples, num_steps, D)`` of sequences drawn from the model's own
    trace, one step at a time: at step t the model runs on the t + 1 steps drawn so far (the
    last a placeholder it never feeds back) with z_{<t} conditioned on their draws; z_t is drawn
    from the trace's p(z_t | h_{t-1}) (or from ``z_prior``), then x_t from the trace's
    p(x_t | z_t, h_{t-1}) with z_t conditioned too."""
    x, z, probs = torch.zeros(num_samples, num_steps, model.x_dim), {}, []
    for t in range(num_steps):
        p_z = poutine.trace(poutine.condition(model, data=z)).get_trace(x[:, :t + 1]).nodes[f"z_{t}"]["fn"]
        z[f"z_{t}"] = p_z.sample() if z_prior is None else z_prior.expand(p_z.batch_shape).sample()
        p_x = poutine.trace(poutine.condition(model, data=z)).get_trace(x[:, :t + 1]).nodes[f"x_{t}"]["fn"]
        probs.append(p_x.mean)
        x[:, t] = p_x.sample()
    return torch.stack(probs, 1)


def mean_difference_in_standard_errors(a, b):
    """(mean(a) - mean(b)) / its standard error, per step and key, over independent draws (dim 0)."""
    return (a.mean(0) - b.mean(0)) / (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()


def test_generate_draws_each_latent_from_the_recurrent_prior():
    """``generate`` is ancestral sampling of the model: z_t ~ p(z_t | h_{t-1}), not N(0, I).
    Its frames' key probabilities, averaged over 2000 draws per step, match those of draws made
    from the model's own trace (:func:`ancestral_draws`) within 4.5 standard errors at each of
    the 4 x 6 (step, key) cells (2.7 at most here). The check has teeth: the prior is set away
    from N(0, I) and made to move with h, the decoder sharpened, and draws with z_t ~ N(0, I)
    are off by more than 20 standard errors (86 here), draws with z_t ~ p(z_t | h_0) at every
    step by more than 10 (20 here)."""
    model, _ = pair()
    with torch.no_grad():
        model.recurrence.cell.weight_ih.mul_(3.0)  # a state that moves with x_t and z_t ...
        model.prior_net[0].weight.mul_(2.0)  # ... a prior that moves with the state ...
        model.prior_net[-1].weight.mul_(4.0)
        model.prior_net[-1].bias[:3] = 1.5  # ... centred away from 0, with scales about 0.3
        model.prior_net[-1].bias[3:] = -1.0
        model.decoder[-1].weight.mul_(3.0)
    num_samples, num_steps = 2000, 4
    with torch.no_grad():
        pyro.set_rng_seed(1)
        generated = model.generate(num_samples, num_steps, mean=True)
        pyro.set_rng_seed(2)
        reference = ancestral_draws(model, num_samples, num_steps)
        pyro.set_rng_seed(3)
        standard = ancestral_draws(model, num_samples, num_steps,
                                   z_prior=pyro.distributions.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.set_rng_seed(4)
        first = ancestral_draws(model, num_samples, num_steps, z_prior=model.prior(torch.zeros(5)))
    assert generated.shape == reference.shape == (num_samples, num_steps, 6)
    off = {name: float(mean_difference_in_standard_errors(draws, reference).abs().max())
           for name, draws in (("generate", generated), ("N(0, I)", standard), ("p(z | h_0)", first))}
    assert off["generate"] < 4.5 and off["N(0, I)"] > 20 and off["p(z | h_0)"] > 10, off


def test_trains_on_bucketed_chorales():
    roots = [Path(r) for r in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if r]
    if not any((root / "bach_chorales").is_dir() for root in roots):
        pytest.skip("$PYROVAE_DATA has no bach_chorales/ folder")
    from pyrovae.data import load_dataset

    data = load_dataset("bach-chorales")
    small = dataclasses.replace(data, train={k: v[:16] for k, v in data.train.items()})
    torch.manual_seed(0)
    model = VRNN(x_dim=88, z_dim=4, rnn_dim=16, feature_dim=16, hidden_dims=(16,))
    guide = VRNNGuide(x_dim=88, z_dim=4, rnn_dim=16, feature_dim=16, hidden_dims=(16,))
    loader = small.bucketed("train", batch_size=8, seed=0)
    result = fit(model, guide, loader, epochs=2, lr=1e-2, progress=False)
    losses = [m["train_loss"] for m in result.metrics]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0]


@pytest.mark.slow
def test_cli_fit_then_evaluate_on_the_chorales(tmp_path):
    """``pyrovae fit --model vrnn --data bach-chorales`` then ``pyrovae evaluate`` in real processes (~20 s)."""
    from tests.cli.helpers import pyrovae as run_cli

    roots = [Path(r) for r in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if r]
    if not any((root / "bach_chorales").is_dir() for root in roots):
        pytest.skip("$PYROVAE_DATA has no bach_chorales/ folder")
    done = run_cli("fit", "--model", "vrnn", "--guide", "vrnn", "--data", "bach-chorales", "--epochs", "1",
                   "--batch-size", "32", "--z-dim", "4", "--rnn-dim", "16", "--feature-dim", "16", "--hidden-dims",
                   "16", "--eval-samples", "5", "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    done = run_cli("evaluate", "run", "--num-samples", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "68 datapoints" in done.stdout
