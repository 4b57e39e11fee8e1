"""The HMM-VAE (Ebbers et al. 2017): the unit chain summed out by the model's forward recursion
(its prior's density) and by enumeration (TraceEnum_ELBO over the unit sites) both equal the
explicit sum over all K^T unit paths; the pair's loss and gradients equal those of the former
program of 3 T sites (a pyro.markov chain summed out by TraceEnum_ELBO) at the same seed, draws
included; padding adds exactly nothing; the Viterbi units are the brute-force argmax and
agree with Pyro's infer_discrete at temperature 0; gradients reach every parameter; a run reloads
to the same units; the digit-sequences data set; and ``pyrovae fit`` then ``pyrovae evaluate``."""

import itertools
import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import infer_discrete

import pyrovae  # noqa: F401
from pyrovae import fit, load_run, log_weights
from pyrovae.guides.hmm_vae import HMMVAEGuide
from pyrovae.infer.objectives import make_objective
from pyrovae.models.hmm_vae import HMMVAE


def pair(K=3, seed=0):
    torch.manual_seed(seed)
    model = HMMVAE(x_dim=4, num_units=K, z_dim=2, hidden_dims=(5,), unit_spread=1.0)
    with torch.no_grad():  # an uneven chain, so that a wrong transition index would show
        model.init_logits.normal_()
        model.trans_logits.normal_()
        model.unit_scale_raw.normal_(0, 0.5)
    return model, HMMVAEGuide(x_dim=4, z_dim=2, hidden_dims=(5,))


def delta_guide(z):
    """A guide putting z at fixed values ``z`` (N, T, Z): the bound is then log p(x, z) itself."""
    def guide(x, mask):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z, event_dim=2))
    return guide


def stepwise_pair(model, guide):
    """The former program of the pair, with the same modules: per step a unit site ``s_t``
    enumerated in a pyro.markov chain, ``z_t`` from its unit and ``x_t`` from ``z_t``, each masked
    with ``mask[:, t]``; the guide one site ``z_t`` per step. Fit with TraceEnum_ELBO."""
    def old_model(x, mask):
        with pyro.plate("data", x.shape[0]):
            s = None
            for t in pyro.markov(range(x.shape[1])):
                logits = model.log_init() if s is None else model.log_transition()[s]
                s = pyro.sample(f"s_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", model.unit_prior(s))
                    pyro.sample(f"x_{t}", model.emission(z), obs=x[:, t])

    def old_guide(x, mask):
        q = guide.encode(x)
        with pyro.plate("data", x.shape[0]):
            for t in range(x.shape[1]):
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"z_{t}", dist.Normal(q.loc[:, t], q.scale[:, t]).to_event(1))
    return old_model, old_guide


def explicit_log_joint(model, x, mask, z):
    """log p(x, z) per row by brute force: the sum over all K^T unit paths, one at a time."""
    K, T = model.num_units, x.shape[1]
    normal = torch.distributions.Normal
    log_pi, log_A, scale = model.log_init(), model.log_transition(), model.unit_scale()
    paths = []
    for path in itertools.product(range(K), repeat=T):
        lp = log_pi[path[0]].expand(x.shape[0])
        for t in range(T):
            if t:
                lp = lp + log_A[path[t - 1], path[t]]  # the chain runs on through padding
            lp = lp + normal(model.unit_loc[path[t]], scale[path[t]]).log_prob(z[:, t]).sum(-1) * mask[:, t]
        paths.append(lp)
    log_pz = torch.logsumexp(torch.stack(paths), 0)
    log_px = sum(torch.distributions.Bernoulli(logits=model.decoder(z[:, t])).log_prob(x[:, t]).sum(-1) * mask[:, t]
                 for t in range(T))
    return log_pz + log_px


def guide_draw(guide, batch, seed=0):
    pyro.set_rng_seed(seed)
    return poutine.trace(guide).get_trace(x=batch["x"], mask=batch["mask"]).nodes["z"]["value"].detach()


@pytest.mark.parametrize("K", [2, 3])
def test_enumerated_and_forward_sums_equal_the_explicit_sum_over_unit_paths(K):
    model, guide = pair(K)
    batch = model.example_batch(n=5, num_steps=3, seed=1)
    assert batch["lengths"].tolist() != [3] * 5  # padding is exercised
    z = guide_draw(guide, batch)
    explicit = explicit_log_joint(model, batch["x"], batch["mask"], z).detach()
    data = {"x": batch["x"], "mask": batch["mask"]}
    # the pair's own objective (the forward recursion in the prior's density), the guide a point mass
    bound = make_objective("elbo")(model, delta_guide(z), data, 0).detach()
    assert torch.allclose(-bound * 5, explicit.sum(), atol=1e-4)
    # TraceEnum_ELBO over the unit sites s_t of model.unit_sites()
    with model.unit_sites():
        enum = make_objective("enum")(model, delta_guide(z), data, 0).detach()
    assert torch.allclose(-enum * 5, explicit.sum(), atol=1e-4)
    with torch.no_grad():
        # through the suite's importance weights with the real guide
        pyro.set_rng_seed(0)
        log_w, guide_trace, _ = log_weights(model, guide, batch, 1, return_traces=True)
        assert torch.allclose(guide_trace.nodes["z"]["value"][0], z)
        log_q = sum(guide.encode(batch["x"][:, t]).log_prob(z[:, t]).sum(-1) * batch["mask"][:, t] for t in range(3))
        assert torch.allclose(log_w[0], explicit - log_q, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradients_equal_the_former_stepwise_program(seed):
    """The pair's default objective on the three-site program gives the loss and gradients of the
    former program (3 T sites, the units enumerated by TraceEnum_ELBO) at the same seed: the same
    draws (the guide draws step by step) and the same bound, to float rounding."""
    model, guide = pair(3, seed)
    batch = model.example_batch(n=7, num_steps=6, seed=seed)
    data = {"x": batch["x"], "mask": batch["mask"]}
    params = list(model.parameters()) + list(guide.parameters())
    old_model, old_guide = stepwise_pair(model, guide)
    results = []
    for objective, m, g in ((make_objective("enum"), old_model, old_guide),
                            (make_objective(guide.objective_name), model, guide)):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(seed)
        loss = objective(m, g, data, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in params], torch.rand(())))
    (old_loss, old_grads, old_next), (loss, grads, after) = results
    assert torch.allclose(loss, old_loss, rtol=1e-6, atol=1e-5)
    for g_old, g_new in zip(old_grads, grads):
        assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-5)
    assert old_next == after  # the same random numbers were drawn


def test_padding_adds_nothing_to_the_enumerated_bound():
    """Each row alone, cut to its length, gives the same bound as inside a padded batch, whatever
    the padding holds (the unmasked units past a row's end sum to exactly 1)."""
    model, _ = pair(3)
    batch = model.example_batch(n=4, num_steps=5, seed=3)
    assert batch["lengths"].min() < 5
    z = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    objective = make_objective("elbo")

    def enum(*args):
        return objective(*args).detach()

    padded = enum(model, delta_guide(z), {"x": batch["x"], "mask": batch["mask"]}, 0) * 4
    alone = sum(enum(model, delta_guide(z[n:n + 1, :L]), {"x": batch["x"][n:n + 1, :L],
                                                          "mask": batch["mask"][n:n + 1, :L]}, 0)
                for n, L in enumerate(batch["lengths"].tolist()))
    assert torch.allclose(padded, alone, atol=1e-4)
    pad = ~batch["mask"]
    noisy_x = torch.where(pad[..., None], torch.ones_like(batch["x"]), batch["x"])
    noisy_z = torch.where(pad[..., None], torch.full_like(z, 7.0), z)
    noisy = enum(model, delta_guide(noisy_z), {"x": noisy_x, "mask": batch["mask"]}, 0) * 4
    assert torch.allclose(noisy, padded, atol=1e-5)
    changed_x = batch["x"].clone()
    changed_x[0, 0] = 1 - changed_x[0, 0]
    changed = enum(model, delta_guide(z), {"x": changed_x, "mask": batch["mask"]}, 0) * 4
    assert not torch.allclose(changed, padded)


def test_viterbi_is_the_brute_force_argmax_and_matches_infer_discrete():
    model, _ = pair(3, seed=2)
    T = 4
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    z = torch.randn(4, T, 2, generator=torch.Generator().manual_seed(1))
    units = model.viterbi(z, mask)
    log_pi, log_A = model.log_init(), model.log_transition()
    log_emit = model.unit_log_prob(z)  # (N, T, K)
    with torch.no_grad():
        for n, L in enumerate(mask.sum(1).tolist()):
            def score(path):
                return float(log_pi[path[0]] + sum(log_A[path[t - 1], path[t]] for t in range(1, L))
                             + sum(log_emit[n, t, path[t]] for t in range(L)))
            best = max(itertools.product(range(3), repeat=L), key=score)
            assert units[n, :L].tolist() == list(best)
            assert (units[n, L:] == -1).all()
    # Pyro's MAP over the enumerated chain (full rows: there padded units would be maximized too)
    full = torch.ones(4, T, dtype=torch.bool)
    conditioned = poutine.condition(model, data={"z": z})
    decoder = infer_discrete(conditioned, first_available_dim=-2, temperature=0)
    with model.unit_sites():
        trace = poutine.trace(decoder).get_trace(x=torch.zeros(4, T, 4), mask=full)
    pyro_units = torch.stack([trace.nodes[f"s_{t}"]["value"].reshape(4) for t in range(T)], 1)
    assert torch.equal(pyro_units, model.viterbi(z, full))


def test_gradients_reach_every_parameter_and_the_units_survive_a_reload(tmp_path):
    model, guide = pair(3)
    batch = model.example_batch(n=6, num_steps=4)
    loss = make_objective("elbo")(model, guide, batch, 0)
    loss.backward()
    for name, p in list(model.named_parameters()) + list(guide.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    fit(model, guide, batch, epochs=2, batch_size=3, progress=False,
        out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, HMMVAE) and run.model.options == model.options
    assert torch.equal(run.model.units(run.guide, batch["x"], batch["mask"]),
                       model.units(guide, batch["x"], batch["mask"]))
    # run alone, the model draws each row's units from the chain: rows' z_0 lie near different units
    with torch.no_grad():
        model.unit_loc.mul_(10.0)
        trace = poutine.trace(model).get_trace(x=torch.zeros(64, 2, 4))
        nearest = model.unit_log_prob(trace.nodes["z"]["value"][:, 0]).argmax(-1)
    assert trace.nodes["z"]["value"].shape == (64, 2, 2) and len(nearest.unique()) > 1
    frames, units = model.generate(num_samples=3, num_steps=5)
    assert frames.shape == (3, 5, 4) and units.shape == (3, 5) and set(frames.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="num_units"):
        HMMVAE(x_dim=4, num_units=0)
    with pytest.raises(ValueError, match="unit_spread"):
        HMMVAE(x_dim=4, unit_spread=-1.0)


def test_digit_sequences_follow_the_chain_and_keep_the_splits_apart():
    from pyrovae.data import load_dataset
    from pyrovae.data.digit_sequences import load_digit_sequences, unit_chain

    data = load_dataset("digit-sequences")
    assert data.dims() == {"x_dim": 64} and len(data.train["x"]) == 500 and len(data.test["x"]) == 100
    again = load_digit_sequences()
    assert torch.equal(again.test["x"], data.test["x"]) and torch.equal(again.train["units"], data.train["units"])
    P = unit_chain()
    grey, digits = load_digit_sequences("none"), load_dataset("digits", binarize="none")
    for name in ("train", "test"):
        split, raw = data.split(name), grey.split(name)
        assert torch.equal(split["mask"], split["units"] >= 0) and torch.equal(split["lengths"], split["mask"].sum(1))
        assert set(split["x"][split["mask"]].unique().tolist()) <= {0.0, 1.0}
        assert (split["x"][~split["mask"]] == 0).all()
        assert split["lengths"].min() >= 6 and split["lengths"].max() <= 40
        for row in split["units"][:50]:
            row = row[row >= 0].numpy()
            changes = np.flatnonzero(np.diff(row)) + 1
            runs = np.diff(np.concatenate([[0], changes, [len(row)]]))
            assert runs.min() >= 2 and all(P[a, b] > 0 for a, b in zip(row[changes - 1], row[changes]))
        # every frame is an image of its unit's class, from the same split of digits
        pool = getattr(digits, name)
        frames, units = raw["x"][raw["mask"]][:300], raw["units"][raw["mask"]][:300]
        match = (frames[:, None] == pool["x"][None]).all(-1)
        assert match.any(1).all() and (pool["y"][match.float().argmax(1)] == units).all()
    with pytest.raises(ValueError, match="binarize"):
        load_dataset("digit-sequences", binarize="dynamic")


def test_cli_fit_then_evaluate(tmp_path):
    """``pyrovae fit --model hmm-vae`` (its own guide and the elbo objective) then ``pyrovae evaluate``."""
    from tests.cli.helpers import pyrovae as run_cli

    done = run_cli("fit", "--model", "hmm-vae", "--data", "digit-sequences", "--epochs", "1", "--batch-size", "100",
                   "--num-units", "4", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "2", "--no-progress",
                   "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=2)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["name"] == "hmm-vae" and saved["guide"]["name"] == "hmm-vae"
    assert saved["objective"]["name"] == "elbo"
    done = run_cli("evaluate", "run", "--num-samples", "2", "--limit", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
