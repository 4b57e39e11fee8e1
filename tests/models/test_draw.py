"""DRAW without attention (models/draw.py, guides/draw.py): per-step sites z_1..z_T, the
canvas the sum of the writes, log-weights by a hand-written recursion with the model's own
decoder in the guide, the KL per step (bits) summing to the KL of the ELBO, the k-step
reconstructions, the learned prior, save/load, and `pyrovae fit` in a real process."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Bernoulli, Normal
from torch.nn.functional import softplus

from pyrovae import load_run, log_weights
from pyrovae.infer.importance import latent_sites
from pyrovae.guides import DRAWGuide
from pyrovae.models import DRAW
from tests.contract import binary_data, check_contract, check_trains_and_improves

SIZES = dict(x_dim=12, z_dim=3, num_steps=4, rnn_dim=8)


def pair(prior="standard", seed=0, **sizes):
    torch.manual_seed(seed)
    sizes = {**SIZES, **sizes}
    model, guide = DRAW(**sizes, prior=prior), DRAWGuide(**sizes)
    guide.bind_model(model)
    return model, guide


def by_hand(model, guide, x, z):
    """The recursion of Gregor et al. with the modules' weights: returns the writes (list over
    steps) and log p(x, z) - log q(z | x), z a dict {"z_t": (K, N, Z)}."""
    K, N = z["z_1"].shape[:2]
    H, Z = model.rnn_dim, model.z_dim
    h_dec = c_dec = h_enc = c_enc = torch.zeros(K * N, H)
    canvas = torch.zeros(K * N, x.shape[1])
    xs = x.expand(K, N, -1).reshape(K * N, -1)
    log_w, writes = torch.zeros(K * N), []
    for t in range(1, model.num_steps + 1):
        zt = z[f"z_{t}"].reshape(K * N, Z)
        h_enc, c_enc = guide.encoder(torch.cat([xs, xs - torch.sigmoid(canvas), h_dec], -1), (h_enc, c_enc))
        q = guide.posterior_net(h_enc)
        log_w -= Normal(q[:, :Z], softplus(q[:, Z:]) + 1e-4).log_prob(zt).sum(-1)
        if model.prior_net is None:
            log_w += Normal(0.0, 1.0).log_prob(zt).sum(-1)
        else:
            p = model.prior_net(h_dec)
            log_w += Normal(p[:, :Z], softplus(p[:, Z:]) + 1e-4).log_prob(zt).sum(-1)
        h_dec, c_dec = model.decoder(zt, (h_dec, c_dec))
        writes.append(model.write(h_dec))
        canvas = canvas + writes[-1]
    log_w += Bernoulli(logits=canvas).log_prob(xs).sum(-1)
    return [w.reshape(K, N, -1) for w in writes], log_w.reshape(K, N)


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_per_step_sites_canvas_is_the_sum_of_the_writes_and_log_weights_by_hand(prior):
    model, guide = pair(prior)
    x = binary_data(5, 12)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        log_w, guide_trace, model_trace = log_weights(model, guide, {"x": x}, 6, return_traces=True)
        names = [f"z_{t}" for t in range(1, 5)]
        latents = [site["name"] for site in latent_sites(model_trace)]
        assert latents == names and [n for n in guide_trace.nodes if n.startswith("z_")] == names
        z = {n: guide_trace.nodes[n]["value"] for n in names}
        assert z["z_1"].shape == (6, 5, 3)
        writes, expected = by_hand(model, guide, x, z)
        canvas = model_trace.nodes["x"]["fn"].base_dist.logits  # c_T, the Bernoulli's logits
        torch.testing.assert_close(canvas, sum(writes), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(writes[0], writes[1])  # each step writes its own update
        torch.testing.assert_close(log_w, expected, atol=1e-4, rtol=1e-5)


def test_the_encoder_cell_is_the_lstm_cell_with_the_image_product_computed_once():
    """FixedInputLSTMCell (the image's share of the gates computed once per image, broadcast over
    particles) gives nn.LSTMCell's state and gradients on the concatenated input, to float rounding."""
    model, guide = pair(seed=2)
    g = torch.Generator().manual_seed(0)
    x = binary_data(5, 12)
    canvas, h_dec = torch.randn(3, 5, 12, generator=g), torch.randn(3, 5, 8, generator=g)
    state = (torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g))
    new = guide.encode_step(x, canvas, h_dec, state, guide.read_image(x))
    flat = torch.cat([x.expand(3, 5, 12), x - torch.sigmoid(canvas), h_dec], -1).reshape(15, -1)
    old = guide.encoder(flat, tuple(s.expand(3, 5, 8).reshape(15, 8) for s in state))  # nn.LSTMCell's step
    params = list(guide.encoder.parameters())
    grads_new = torch.autograd.grad(sum(t.sin().sum() for t in new), params)
    grads_old = torch.autograd.grad(sum(t.sin().sum() for t in old), params)
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b.reshape(3, 5, 8), atol=1e-6, rtol=1e-5)
    for a, b in zip(grads_new, grads_old):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_the_model_replays_the_guides_decoder_steps_with_the_same_loss_and_gradients(objective, monkeypatch):
    """The model takes the decoder steps the guide computed (DRAW.share_decoding): the decoder
    runs T times per pass, not 2T, and the loss and every gradient are those of the pair that
    runs it twice, at the same seed; nothing is kept after the model's pass."""
    from pyrovae.infer.objectives import make_objective

    model, guide = pair()
    x = binary_data(5, 12)
    loss_fn = make_objective(objective, **({"num_particles": 3} if objective == "iwae" else {}))
    calls = []

    def loss_and_grads():
        pyro.set_rng_seed(4)
        loss = loss_fn(model, guide, {"x": x}, 0)
        params = list(model.parameters()) + list(guide.parameters())
        return loss, torch.autograd.grad(loss, params)

    loss_and_grads()  # the objective's first call also traces the pair once (its plate nesting)
    handle = model.decoder.register_forward_hook(lambda *args: calls.append(1))
    shared, shared_grads = loss_and_grads()
    from pyrovae.models.draw import _DECODED

    assert len(calls) == model.num_steps and model not in _DECODED
    calls.clear()
    monkeypatch.setattr(DRAW, "share_decoding", lambda self: None)
    twice, twice_grads = loss_and_grads()
    handle.remove()
    assert len(calls) == 2 * model.num_steps
    torch.testing.assert_close(shared, twice, atol=1e-5, rtol=1e-6)
    for a, b in zip(shared_grads, twice_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_guide_uses_the_model_decoder_registered_once():
    model, guide = pair()
    names = {n for n, _ in guide.named_parameters()}
    assert names == {"encoder.weight_ih", "encoder.weight_hh", "encoder.bias_ih", "encoder.bias_hh",
                     "posterior_net.weight", "posterior_net.bias"}
    assert not any(k.startswith("decoder") or "model" in k for k in guide.state_dict())
    x = binary_data(4, 12)
    pyro.set_rng_seed(0)
    before = poutine.trace(guide).get_trace(x).nodes["z_2"]["fn"].base_dist.loc
    with torch.no_grad():
        model.decoder.weight_ih.add_(0.5)  # the model's decoder changes what the guide sees at step 2
    pyro.set_rng_seed(0)
    after = poutine.trace(guide).get_trace(x).nodes["z_2"]["fn"].base_dist.loc
    assert not torch.allclose(before, after)


def test_an_unbound_or_mismatched_guide_says_what_to_do():
    guide = DRAWGuide(**SIZES)
    with pytest.raises(RuntimeError, match="bind_model"):
        guide(binary_data(2, 12))
    with pytest.raises(ValueError, match="num_steps is 4 but the model's is 5"):
        guide.bind_model(DRAW(**{**SIZES, "num_steps": 5}))
    with pytest.raises(ValueError, match="unknown prior .*; choose one of \\(.standard., .learned.\\)"):
        DRAW(**SIZES, prior="vamp")


def test_kl_per_step_in_bits_one_step_closed_form():
    model, guide = pair(num_steps=1)
    x = binary_data(4, 12)
    bits = guide.kl_per_step(x)  # (N, 1)
    with torch.no_grad():
        h, _ = guide.encoder(torch.cat([x, x - 0.5, torch.zeros(4, 8)], -1))
        q = guide.posterior_net(h)
        mu, s = q[:, :3], softplus(q[:, 3:]) + 1e-4
        kl = (0.5 * (mu ** 2 + s ** 2 - 1) - s.log()).sum(-1)  # KL(N(mu, s^2) || N(0, 1)), nats
    torch.testing.assert_close(bits[:, 0], kl / math.log(2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_kl_per_step_sums_to_the_kl_of_the_elbo(prior):
    """sum_t KL_t (bits, x ln 2) against E_q[log q(z_{1:T} | x) - log p(z_{1:T})] by Monte
    Carlo over 4000 joint draws: equal within 4 standard errors."""
    model, guide = pair(prior, seed=1)
    x = binary_data(3, 12)
    pyro.set_rng_seed(0)
    total_nats = guide.kl_per_step(x, num_samples=4000).sum(-1) * math.log(2)  # (N,)
    with torch.no_grad():
        _, guide_trace, model_trace = log_weights(model, guide, {"x": x}, 4000, return_traces=True)
    names = [f"z_{t}" for t in range(1, 5)]
    log_ratio = sum(guide_trace.nodes[n]["log_prob"] - model_trace.nodes[n]["log_prob"] for n in names)  # (K, N)
    mean, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(4000)
    assert (total_nats > 0.05).all()
    assert ((total_nats - mean).abs() < 4 * se + 1e-3).all(), (total_nats, mean, se)


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_k_step_reconstruction_is_the_model_with_the_first_k_posterior_means(prior):
    model, guide = pair(prior, seed=2)
    x = binary_data(5, 12)
    means = guide.trajectory(x, posterior="mean")["z"]  # all T steps from q's means
    for k in range(0, 5):
        recon = guide.reconstruct(x, k)
        # the same images from the Pyro model: z_t = q's mean for t <= k, the prior's mean after
        fixed = {f"z_{t}": means[t - 1] for t in range(1, k + 1)}
        state, canvas = model.initial_state(5, x)
        with torch.no_grad():
            for t in range(1, 5):
                zt = fixed.get(f"z_{t}", model.prior(state[0]).mean.expand(5, 3))
                fixed[f"z_{t}"] = zt
                state, canvas, _ = model.decode_step(zt, state, canvas)
            trace = poutine.trace(poutine.condition(model, data=fixed)).get_trace(x)
        torch.testing.assert_close(recon, torch.sigmoid(trace.nodes["x"]["fn"].base_dist.logits), atol=1e-5, rtol=1e-5)
    # k = 0 is the prior alone (the same for every image); k = T does not use the prior
    assert torch.allclose(guide.reconstruct(x, 0), guide.reconstruct(1 - x, 0))
    assert torch.equal(guide.reconstruct(x, 4, rest="sample"), guide.reconstruct(x, 4))
    assert not torch.allclose(guide.reconstruct(x, 1, rest="sample"), guide.reconstruct(x, 1, rest="sample"))
    with pytest.raises(ValueError, match="k must be in 0..4"):
        guide.reconstruct(x, 5)


def test_learned_prior_meets_the_contract_trains_and_reloads(tmp_path):
    from pyrovae import fit

    model, guide = pair("learned")
    batch = {"x": binary_data(16, 12)}
    check_contract(model, guide, batch)
    check_trains_and_improves(*pair("learned"), "elbo")
    fit(model, guide, batch, epochs=1, batch_size=8, progress=False, out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.model.options.prior == "learned" and run.guide.model is run.model
    with torch.no_grad():
        pyro.set_rng_seed(1)
        before = log_weights(model, guide, batch, 3)
        pyro.set_rng_seed(1)
        after = log_weights(run.model, run.guide, batch, 3)
    torch.testing.assert_close(before, after)


def test_generate():
    model, _ = pair("learned")
    assert model.sample(5).shape == (5, 12)
    assert set(model(num_samples=3).unique().tolist()) <= {0.0, 1.0}


def test_cli_fit_then_evaluate(tmp_path):
    """``pyrovae fit --model draw`` (the guide bound to the model it builds) and ``pyrovae evaluate``
    of the saved run, in real processes."""
    from tests.cli.helpers import pyrovae as run_cli

    done = run_cli("fit", "--model", "draw", "--guide", "draw", "--data", "digits", "--epochs", "1", "--num-steps", "3",
                   "--z-dim", "2", "--rnn-dim", "16", "--prior", "learned", "--eval-samples", "5", "--no-progress",
                   "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    done = run_cli("evaluate", "run", "--num-samples", "7", cwd=tmp_path)  # K=5 was scored by fit already
    assert done.returncode == 0, done.stderr


def test_the_default_init_starts_the_canvas_at_the_data_mean():
    """``init="burda"`` (the default for DRAW) sets the write's bias to a T-th of the mean
    pixel's logits: with the write's weights at zero the T writes add up to the mean image."""
    from pyrovae.nn import default_init, initialize_

    model, guide = pair()
    x = binary_data(40, 12)
    assert default_init(model) == "burda"
    initialize_(model, guide, {"x": x}, "burda")
    with torch.no_grad():
        model.write.weight.zero_()
        run = guide.trajectory(x[:3])
    mean = x.mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(run["canvas"]), mean.expand(3, -1))
    torch.testing.assert_close(torch.sigmoid(run["writes"][0]), torch.sigmoid(torch.logit(mean) / model.num_steps).expand(3, -1))


def test_fit_and_the_cli_default_to_the_models_learning_rate(tmp_path):
    """DRAW declares Adam 3e-3 (docs/draw.md): ``fit`` without ``lr`` records and uses it, an
    explicit ``lr`` wins, and a model that declares none gets 1e-3."""
    import json

    from pyrovae import fit
    from pyrovae.models import VAE
    from pyrovae.guides import DiagNormalGuide
    from pyrovae.training.fit import default_lr

    x = binary_data(16, 12)
    assert default_lr(DRAW(x_dim=12)) == 3e-3 and default_lr(VAE(12, 2, (8,))) == 1e-3
    for lr, want in ((None, 3e-3), (1e-4, 1e-4)):
        model, guide = pair()
        fit(model, guide, x, epochs=1, batch_size=8, lr=lr, progress=False, out_dir=tmp_path / str(lr), figures=False)
        assert json.loads((tmp_path / str(lr) / "run.json").read_text())["fit"]["lr"] == want
    fit(VAE(12, 2, (8,)), DiagNormalGuide(12, 2, (8,)), x, epochs=1, batch_size=8, progress=False,
        out_dir=tmp_path / "vae", figures=False)
    assert json.loads((tmp_path / "vae" / "run.json").read_text())["fit"]["lr"] == 1e-3
