"""The deep Markov model (Krishnan et al. 2017): log-weights follow the Markov recursion by hand,
the loss and gradients equal those of the former program of one site per step at the same seed,
padding never counts, the guide's backward RNN reads only real steps, gradients reach every
parameter, and it trains on the length-bucketed chorales."""

import dataclasses
import os
from pathlib import Path

import pyro
import pytest
import torch
from torch.distributions import Bernoulli, Normal
from torch.nn.functional import softplus

import pyrovae  # noqa: F401
from pyrovae import fit, log_weights
from pyrovae.guides.dmm import DMMGuide, reverse_within_lengths
from pyrovae.models.dmm import DMM


def pair(seed=0):
    torch.manual_seed(seed)
    return (DMM(x_dim=6, z_dim=3, transition_dim=5, emission_dim=7),
            DMMGuide(x_dim=6, z_dim=3, rnn_dim=5))


def weights_and_latents(model, guide, batch, k=3, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        log_w, guide_trace, _ = log_weights(model, guide, batch, k, return_traces=True)
    z = guide_trace.nodes["z"]["value"]  # (K, N, T, Z)
    return log_w, {f"z_{t}": z[..., t, :] for t in range(z.shape[-2])}


def recursion(model, guide, x, mask, z):
    K, N = z["z_0"].shape[:2]
    lengths = mask.sum(1)
    r = torch.zeros(N, x.shape[1], 5)
    for n in range(N):  # the backward GRU over each row's real steps, one row at a time
        out, _ = guide.rnn(x[n, :lengths[n]].flip(0)[None])
        r[n, :lengths[n]] = out[0].flip(0)
    total = torch.zeros(K, N)
    zp, zq = model.z_init.expand(K, N, 3), guide.z_q_init.expand(K, N, 3)
    for t in range(x.shape[1]):
        zt = z[f"z_{t}"]
        loc, scale = model.transition(zp)
        h = 0.5 * (torch.tanh(guide.z_to_h(zq)) + r[:, t])
        q = Normal(guide.loc(h), softplus(guide.scale(h)) + 1e-4)
        step = (Normal(loc, scale).log_prob(zt).sum(-1) - q.log_prob(zt).sum(-1)
                + Bernoulli(logits=model.emitter(zt)).log_prob(x[:, t]).sum(-1))
        total = total + step * mask[:, t]
        zp = zq = zt
    return total


def test_log_weights_follow_the_recursion_and_ignore_padding():
    model, guide = pair(1)
    batch = model.example_batch(n=6, num_steps=4, seed=2)
    assert batch["lengths"].tolist() != [4] * 6
    log_w, z = weights_and_latents(model, guide, batch, seed=5)
    with torch.no_grad():
        assert torch.allclose(log_w, recursion(model, guide, batch["x"], batch["mask"], z), atol=1e-4)
    noisy = dict(batch, x=torch.where(batch["mask"][..., None], batch["x"], torch.ones_like(batch["x"])))
    assert not torch.equal(noisy["x"], batch["x"])
    assert torch.allclose(weights_and_latents(model, guide, noisy, seed=5)[0], log_w, atol=1e-6)
    changed = dict(batch, x=batch["x"].clone())
    changed["x"][0, 0] = 1 - changed["x"][0, 0]
    assert not torch.allclose(weights_and_latents(model, guide, changed, seed=5)[0][:, 0], log_w[:, 0])


def stepwise_pair(model, guide):
    """The former program of the pair, with the same modules: one site ``z_t`` and ``x_t`` per step
    in a pyro.markov loop, each masked with ``mask[:, t]``, the guide's ``z_t`` drawn from
    ``z_{t-1}`` and the backward RNN at step t."""
    from pyro import poutine
    import pyro.distributions as dist

    def old_model(x, mask):
        z = model.z_init.expand(x.shape[0], model.z_dim)
        with pyro.plate("data", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", model.prior(z))
                    pyro.sample(f"x_{t}", model.emission(z), obs=x[:, t])

    def old_guide(x, mask):
        r, _ = guide.rnn(reverse_within_lengths(x, mask))
        r = reverse_within_lengths(r, mask)
        z = guide.z_q_init.expand(x.shape[0], guide.options.z_dim)
        with pyro.plate("data", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                h = 0.5 * (torch.tanh(guide.z_to_h(z)) + r[:, t])
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(guide.loc(h), softplus(guide.scale(h)) + 1e-4).to_event(1))
    return old_model, old_guide


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_loss_and_gradients_equal_the_former_stepwise_program(objective):
    """One latent site ``z`` (T, Z) and one observed ``x`` (T, D), the steps batched: the same loss
    and gradients as the former program of 2 T model sites and T guide sites at the same seed
    (the same draws: the guide draws step by step), to float rounding."""
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
    (old_loss, old_grads), (loss, grads) = results
    assert torch.allclose(loss, old_loss, rtol=1e-6, atol=1e-5)
    for g_old, g_new in zip(old_grads, grads):
        assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-6)


def test_the_chains_density_of_another_value_and_in_blocks_is_the_draws():
    """log q of a value that is not the latest draw (every step's network at once, in blocks of
    steps when the rows are many) equals log q read back from the draw."""
    from pyrovae.models import dmm

    model, guide = pair(1)
    batch = model.example_batch(n=4, num_steps=5, seed=1)
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(guide).get_trace(x=batch["x"], mask=batch["mask"])
    fn, z = trace.nodes["z"]["fn"], trace.nodes["z"]["value"]
    read_back = fn.log_prob(z)
    assert torch.allclose(fn.log_prob(z.clone()), read_back, atol=1e-5)
    rows, dmm.ROWS_PER_CALL = dmm.ROWS_PER_CALL, 8  # 4 rows x 2 steps per call
    try:
        assert dmm.step_blocks(z) == [slice(0, 2), slice(2, 4), slice(4, 5)]
        assert torch.allclose(fn.log_prob(z.clone()), read_back, atol=1e-5)
        model_fn = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace)).get_trace(
            x=batch["x"], mask=batch["mask"]).nodes["x"]["fn"]
        blocked = model_fn.log_prob(batch["x"])
    finally:
        dmm.ROWS_PER_CALL = rows
    assert torch.allclose(model_fn.log_prob(batch["x"]), blocked, atol=1e-5)


def test_reverse_within_lengths():
    x = torch.arange(8.).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert reverse_within_lengths(x, mask)[..., 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]


def test_gradients_reach_every_parameter_and_generate():
    model, guide = pair()
    batch = model.example_batch(n=5, num_steps=4)
    log_w = log_weights(model, guide, batch, 2)
    log_w.sum().backward()
    for name, p in list(model.named_parameters()) + list(guide.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    x = model.generate(num_samples=3, num_steps=5)
    assert x.shape == (3, 5, 6) and set(x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="z_dim"):
        DMM(x_dim=6, z_dim=0)


def test_trains_on_bucketed_chorales():
    roots = [Path(r) for r in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if r]
    if not any((root / "bach_chorales").is_dir() for root in roots):
        pytest.skip("$PYROVAE_DATA has no bach_chorales/ folder")
    from pyrovae.data import load_dataset

    data = load_dataset("bach-chorales")
    small = dataclasses.replace(data, train={k: v[:16] for k, v in data.train.items()})
    torch.manual_seed(0)
    model = DMM(x_dim=88, z_dim=4, transition_dim=16, emission_dim=16)
    guide = DMMGuide(x_dim=88, z_dim=4, rnn_dim=16)
    result = fit(model, guide, small.bucketed("train", batch_size=8, seed=0), epochs=2, lr=1e-2, progress=False)
    losses = [m["train_loss"] for m in result.metrics]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))) and losses[1] < losses[0]


def test_cli_fit_picks_the_dmm_guide_and_reloads(tmp_path):
    """``pyrovae fit --model dmm`` (its own guide, no --guide) then ``pyrovae evaluate``, in real processes."""
    from tests.cli.helpers import pyrovae as run_cli

    roots = [Path(r) for r in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if r]
    if not any((root / "bach_chorales").is_dir() for root in roots):
        pytest.skip("$PYROVAE_DATA has no bach_chorales/ folder")
    done = run_cli("fit", "--model", "dmm", "--data", "bach-chorales", "--epochs", "1", "--batch-size", "64",
                   "--z-dim", "2", "--transition-dim", "8", "--emission-dim", "8", "--rnn-dim", "8",
                   "--eval-samples", "2", "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=2)" in done.stdout
    done = run_cli("evaluate", "run", "--num-samples", "2", "--limit", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_the_dmms_objective_warms_its_kl_up_by_default(tmp_path):
    """``fit`` and ``pyrovae fit`` give the DMM's objective ``warmup_steps=1000`` (as Krishnan et
    al. anneal the KL; docs/sequences.md#the-dmms-default-kl-warm-up) unless an option or an
    Objective says otherwise."""
    import json

    from pyrovae.cli.fit import build_parser
    from pyrovae.infer.objectives import ELBO

    x = torch.bernoulli(torch.full((8, 3, 5), 0.3), generator=torch.Generator().manual_seed(0))
    data = {"x": x, "mask": torch.ones(8, 3, dtype=torch.bool)}

    def objective_of(out, **kwargs):
        model, guide = DMM(x_dim=5, z_dim=2, transition_dim=4, emission_dim=4), DMMGuide(x_dim=5, z_dim=2, rnn_dim=4)
        fit(model, guide, data, epochs=1, batch_size=4, progress=False, figures=False, out_dir=tmp_path / out, **kwargs)
        return json.loads((tmp_path / out / "run.json").read_text())["objective"]

    assert objective_of("default")["warmup_steps"] == 1000
    assert objective_of("given", objective=ELBO())["warmup_steps"] == 0
    assert build_parser("dmm", "dmm", "elbo").parse_args([]).obj_warmup_steps == 1000
    assert build_parser("dmm", "dmm", "elbo").parse_args(["--kl-warmup", "0"]).obj_warmup_steps == 0
