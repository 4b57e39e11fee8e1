"""The VRNN (Chung et al. 2015): with T = 1 its log-weights are a VAE's, computed here by hand;
for T > 1 they follow the recursion (prior from h_{t-1}, h_t fed by x_t and z_t), masked steps
left out, padding never counted; the loss and gradients equal those of the former program of one
site per step at the same seed; ``generate`` draws what the model's own trace draws (z_t from
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
    return log_w, guide_trace.nodes["z"]["value"]  # (K, N, T, Z)


def test_one_step_is_a_vae_whose_log_weights_are_computed_by_hand():
    model, guide = pair()
    x = torch.bernoulli(torch.full((8, 6), 0.4), generator=torch.Generator().manual_seed(1))
    log_w, z = weights_and_latents(model, guide, {"x": x}, k=5)
    z = z[..., 0, :]  # (K, N, Z)
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
    K, N = z.shape[:2]
    h, g = torch.zeros(K, N, 5), torch.zeros(K, N, 5)
    total = torch.zeros(K, N)
    for t in range(x.shape[1]):
        zt, xt = z[..., t, :], x[:, t].expand(K, N, 6)
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


def stepwise_pair(model, guide):
    """The former program of the pair, with the same modules: one site ``z_t`` and ``x_t`` per step
    in a pyro.markov loop, each masked with ``mask[:, t]``, the states advanced step by step."""
    from pyrovae.models.vrnn import as_steps

    def old_model(x, mask=None, lengths=None):
        x, mask = as_steps(x, mask)
        h = x.new_zeros(x.shape[0], model.rnn_dim)
        with pyro.plate("data", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", model.prior(h))
                    fz = model.recurrence.phi_z(z)
                    pyro.sample(f"x_{t}", model.emission(fz, h), obs=x[:, t])
                if t + 1 < x.shape[1]:
                    h = model.recurrence.step(model.recurrence.phi_x(x[:, t]), fz, h)

    def old_guide(x, mask=None, lengths=None):
        x, mask = as_steps(x, mask)
        g = x.new_zeros(x.shape[0], guide.rnn_dim)
        with pyro.plate("data", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                fx = guide.recurrence.phi_x(x[:, t])
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", guide.posterior(fx, g))
                if t + 1 < x.shape[1]:
                    g = guide.recurrence.step(fx, guide.recurrence.phi_z(z), g)
    return old_model, old_guide


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_loss_and_gradients_equal_the_former_stepwise_program(objective):
    """One latent site ``z`` (T, Z) and one observed ``x`` (T, D), the model's steps batched (one
    GRU call over the steps): the same loss and gradients as the former program of 2 T model
    sites and T guide sites at the same seed (the same draws: the guide draws step by step), to
    float rounding; and the same importance weights at K = 4."""
    from pyrovae.infer.objectives import make_objective

    model, guide = pair(3)
    batch = model.example_batch(n=7, num_steps=6, seed=4)
    data = {"x": batch["x"], "mask": batch["mask"]}
    params = list(model.parameters()) + list(guide.parameters())
    old_model, old_guide = stepwise_pair(model, guide)
    results = []
    for m, g in ((old_model, old_guide), (model, guide)):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(2)
        loss = make_objective(objective)(m, g, data, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in params]))
        pyro.set_rng_seed(5)
        with torch.no_grad():
            results[-1] += (log_weights(m, g, batch, 4),)
    (old_loss, old_grads, old_w), (loss, grads, w) = results
    assert torch.allclose(loss, old_loss, rtol=1e-6, atol=1e-5)
    for g_old, g_new in zip(old_grads, grads):
        assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-6)
    assert torch.allclose(w, old_w, atol=1e-4)


def test_the_chains_density_of_another_value_and_in_blocks_is_the_draws():
    """log q of a value that is not the latest draw (the states by one GRU call over the steps, in
    blocks of steps when the rows are many) equals log q read back from the step-by-step draw; and
    the model's states of the guide's draws in blocks are those in one block."""
    from pyrovae.models import vrnn

    model, guide = pair(1)
    batch = model.example_batch(n=4, num_steps=5, seed=1)
    pyro.set_rng_seed(0)
    trace = poutine.trace(guide).get_trace(x=batch["x"], mask=batch["mask"])
    fn, z = trace.nodes["z"]["fn"], trace.nodes["z"]["value"]
    read_back = fn.log_prob(z)
    assert torch.allclose(fn.log_prob(z.clone()), read_back, atol=1e-5)
    fx = model.recurrence.phi_x(batch["x"])
    whole = model.recurrence.previous_states(fx, z)[1]
    # the model's own draw (no guide): the states kept while drawing are those computed afresh
    prior = model.chain(batch["x"], batch["mask"])
    own = prior.rsample((2,))
    assert torch.allclose(prior.states(own)[1], model.recurrence.previous_states(fx, own.clone())[1], atol=1e-6)
    assert torch.allclose(prior.log_prob(own), prior.log_prob(own.clone()), atol=1e-5)
    rows, vrnn.ROWS_PER_CALL = vrnn.ROWS_PER_CALL, 8  # 4 rows x 2 steps per call
    try:
        assert vrnn.step_blocks(z) == [slice(0, 2), slice(2, 4), slice(4, 5)]
        assert torch.allclose(fn.log_prob(z.clone()), read_back, atol=1e-5)
        assert torch.allclose(model.recurrence.previous_states(fx, z)[1], whole, atol=1e-6)
    finally:
        vrnn.ROWS_PER_CALL = rows


def test_step_params_are_each_steps_gaussian_given_the_steps_before():
    """RecurrentNormal.step_params (a per-step KL reads them, benchmarks/vrnn_chorales.py): their
    masked Normal density is log_prob, for the draw and another value; the first step's is the
    prior at h = 0; and step t's depends on z before t only."""
    model, guide = pair(1)
    batch = model.example_batch(n=4, num_steps=5, seed=2)
    batch["mask"][0, 3:] = False
    pyro.set_rng_seed(0)
    trace = poutine.trace(guide).get_trace(x=batch["x"], mask=batch["mask"])
    q, z = trace.nodes["z"]["fn"].base_dist, trace.nodes["z"]["value"]
    prior = model.chain(batch["x"], batch["mask"])
    for chain in (q, prior):
        for value in (z, z.clone()):
            loc, scale = chain.step_params(value)
            assert loc.shape == scale.shape == z.shape
            log_p = (Normal(loc, scale).log_prob(value).sum(-1) * batch["mask"]).sum(-1)
            assert torch.allclose(log_p, chain.log_prob(value), atol=1e-5)
    loc0, scale0 = model.prior_params(torch.zeros(4, model.rnn_dim))
    loc, scale = prior.step_params(z.clone())
    assert torch.allclose(loc[:, 0], loc0, atol=1e-6) and torch.allclose(scale[:, 0], scale0, atol=1e-6)
    later = z.clone()
    later[:, 2:] += 1.0
    moved = prior.step_params(later)[0]
    assert torch.allclose(moved[:, :3], loc[:, :3], atol=1e-6) and not torch.allclose(moved[:, 3:], loc[:, 3:])


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
    last a placeholder it never feeds back) with z conditioned on the draws so far (step t a
    placeholder); z_t is drawn from the trace's p(z_t | h_{t-1}) (or from ``z_prior``), then x_t
    from the trace's p(x_t | z_t, h_{t-1}) with z_t conditioned too."""
    x, z, probs = torch.zeros(num_samples, num_steps, model.x_dim), torch.zeros(num_samples, num_steps, 3), []

    def site(name, t):
        trace = poutine.trace(poutine.condition(model, data={"z": z[:, :t + 1]})).get_trace(x[:, :t + 1])
        fn = trace.nodes[name]["fn"]
        return getattr(fn, "base_dist", fn)  # the plate's ExpandedDistribution around the site's own

    for t in range(num_steps):
        p_z = site("z", t)
        _, h_prev = p_z.states(z[:, :t + 1])
        step = pyro.distributions.Normal(*model.prior_params(h_prev[:, t])).to_event(1)  # p(z_t | h_{t-1})
        z[:, t] = step.sample() if z_prior is None else z_prior.expand(step.batch_shape).sample()
        p_x = site("x", t)
        probs.append(p_x.mean[:, t])
        x[:, t] = p_x.sample()[:, t]
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
    assert done.returncode == 2 and "--force" in done.stderr  # fit scored K=5 already: kept, not redone
    done = run_cli("evaluate", "run", "--num-samples", "8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "68 datapoints" in done.stdout


def test_the_vrnns_objective_warms_its_kl_up_by_default_from_python_and_the_command_line(tmp_path):
    """Without a warm-up the VRNN's latents collapse (docs/sequences.md): ``fit`` and ``pyrovae
    fit`` give its objective ``warmup_steps=1000`` unless an option or an Objective says otherwise."""
    import json

    from pyrovae.cli.fit import build_parser
    from pyrovae.infer.objectives import ELBO

    x = torch.bernoulli(torch.full((8, 3, 5), 0.3), generator=torch.Generator().manual_seed(0))
    data = {"x": x, "mask": torch.ones(8, 3, dtype=torch.bool)}

    def objective_of(out, **kwargs):
        model = VRNN(x_dim=5, z_dim=2, rnn_dim=4, feature_dim=4, hidden_dims=(4,))
        guide = VRNNGuide(x_dim=5, z_dim=2, rnn_dim=4, feature_dim=4, hidden_dims=(4,))
        fit(model, guide, data, epochs=1, batch_size=4, progress=False, figures=False, out_dir=tmp_path / out, **kwargs)
        return json.loads((tmp_path / out / "run.json").read_text())["objective"]

    assert objective_of("default")["warmup_steps"] == 1000
    assert objective_of("named", objective="iwae")["warmup_steps"] == 1000  # a name gets the model's options
    assert objective_of("given", objective=ELBO())["warmup_steps"] == 0  # an Objective is taken as it is
    assert build_parser("vrnn", "vrnn", "elbo").parse_args([]).obj_warmup_steps == 1000
    assert build_parser("vrnn", "vrnn", "elbo").parse_args(["--kl-warmup", "0"]).obj_warmup_steps == 0
    assert build_parser("vae", "diag", "elbo").parse_args([]).obj_warmup_steps == 0
