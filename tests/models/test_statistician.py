"""The Neural Statistician (Edwards & Storkey 2016): q(c | D) is exchangeable; the item plate
is nested in the set plate; padded items contribute nothing; importance-sampled log p(D) over
c and z jointly matches the closed form of a linear-Gaussian statistician; it trains on the
synthetic families, from Python and from the ``pyrovae`` command."""

import json
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import MultivariateNormal

import pyrovae  # noqa: F401  (registers the pair and the set data sets)
from pyrovae import fit, log_likelihood, log_weights
from pyrovae.data.sets import distribution_sets, pad_sets
from pyrovae.guides import StatisticianGuide
from pyrovae.guides.statistician import masked_mean
from pyrovae.models import NeuralStatistician
from tests.cli.helpers import pyrovae as run_cli

SIZES = dict(x_dim=2, c_dim=3, z_dim=2, hidden_dims=(8,))


def pair(likelihood="gaussian", seed=0, **sizes):
    torch.manual_seed(seed)
    sizes = {**SIZES, **sizes}
    return NeuralStatistician(**sizes, likelihood=likelihood), StatisticianGuide(**sizes, feature_dim=6)


def ragged_batch(seed=0, num_sets=4, width=6, x_dim=2, garbage=0.0):
    """Sets of 2..width items of ``x_dim`` reals, padded to ``width`` with ``garbage`` noise."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, width + 1, (num_sets,), generator=g)
    split = pad_sets([torch.randn(int(n), x_dim, generator=g) for n in sizes], width)
    split["x"] = split["x"] + garbage * torch.randn(split["x"].shape, generator=g) * ~split["mask"][..., None]
    return split


# ------------------------------------------------------------------------------ the statistic network


def test_statistic_network_is_permutation_invariant():
    _, guide = pair()
    batch = ragged_batch(garbage=5.0)
    q = guide.context(batch["x"], batch["mask"])
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # permute the items of each set (padding included) and the mask alike
        order = torch.stack([torch.randperm(6, generator=g) for _ in range(4)])
        x = torch.gather(batch["x"], 1, order[..., None].expand(-1, -1, 2))
        mask = torch.gather(batch["mask"], 1, order)
        q_perm = guide.context(x, mask)
        torch.testing.assert_close(q_perm.mean, q.mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(q_perm.stddev, q.stddev, rtol=0, atol=1e-6)
    changed = batch["x"].clone()
    changed[0, 0] += 1.0  # a real item does count
    assert (guide.context(changed, batch["mask"]).mean[0] - q.mean[0]).abs().max() > 1e-4
    # the pooling is the mean over the real items, whatever the padding holds
    h = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(masked_mean(h, mask), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))
    h[0, 2:] = float("nan")
    assert torch.isfinite(masked_mean(h, mask)).all()


# ------------------------------------------------------------------------------ plates


def test_item_plate_is_nested_inside_the_set_plate():
    model, guide = pair()
    batch = ragged_batch()
    guide_trace = poutine.trace(guide).get_trace(**batch)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    for trace in (model_trace, guide_trace):
        c = trace.nodes["c"]
        assert [(f.name, f.dim, f.size) for f in c["cond_indep_stack"]] == [("sets", -2, 4)]
        assert c["value"].shape == (4, 1, 3)
        z = trace.nodes["z"]
        assert [(f.name, f.dim, f.size) for f in z["cond_indep_stack"]] == [("sets", -2, 4), ("items", -1, 6)]
        assert z["value"].shape == (4, 6, 2)
        assert torch.equal(z["mask"], batch["mask"])  # the item sites are masked
    frames = [(f.name, f.dim) for f in model_trace.nodes["x"]["cond_indep_stack"]]
    assert frames == [("sets", -2), ("items", -1)] and torch.equal(model_trace.nodes["x"]["mask"], batch["mask"])
    assert model.data_plate == "sets"
    # one log-weight per set, under K particles to the left of both plates
    log_w = log_weights(model, guide, batch, 3)
    assert log_w.shape == (3, 4)


# ------------------------------------------------------------------------------ masking


class FixLatents(Messenger):
    """The guide's draws replaced by given values (still latent draws, not observations)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values:
            msg["value"], msg["done"] = self.values[msg["name"]], True


def set_log_weights(model, guide, batch, latents=None):
    """log p(D, c, z) - log q(c, z | D) per set, with the guide's draws fixed to ``latents``
    (else drawn), and the latents used."""
    conditioned = guide if latents is None else FixLatents(latents)(guide)
    guide_trace = poutine.trace(conditioned).get_trace(**batch)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                lp = site["log_prob"]
                total = total + sign * (lp.sum(-1) if lp.shape[-1:] != (1,) else lp.squeeze(-1))
    return total, {name: guide_trace.nodes[name]["value"] for name in ("c", "z")}


def test_padding_contributes_nothing():
    """The same sets padded with 3 more items of garbage: the same log-weights (the padded
    items' latents are dropped), the same q(c | D), no gradient into the padding; and the
    ELBO loss with the same draws is the same."""
    model, guide = pair()
    batch = ragged_batch(width=6)
    padded = pad_sets([batch["x"][s, batch["mask"][s]] for s in range(4)], 9)
    padded["x"] = padded["x"] + 100.0 * torch.randn(padded["x"].shape) * ~padded["mask"][..., None]
    padded["x"].requires_grad_(True)
    log_w_pad, latents = set_log_weights(model, guide, padded)
    # the unpadded batch's width is 6; keep the real items' latents
    log_w, _ = set_log_weights(model, guide, batch, {"c": latents["c"], "z": latents["z"][:, :6]})
    torch.testing.assert_close(log_w_pad, log_w, rtol=1e-5, atol=1e-4)
    log_w_pad.sum().backward()
    assert float(padded["x"].grad[~padded["mask"]].abs().max()) == 0.0
    assert float(padded["x"].grad[padded["mask"]].abs().max()) > 0.0
    # padding changes nothing else either: with the item latents of a real item changed, the weight moves
    z = latents["z"][:, :6].detach().clone()
    z[0, 0] += 1.0
    moved, _ = set_log_weights(model, guide, batch, {"c": latents["c"], "z": z})
    assert abs(float((moved[0] - log_w[0]).detach())) > 1e-3 and torch.allclose(moved[1:], log_w[1:])


def test_elbo_loss_is_unchanged_by_padding_at_the_same_draws():
    """Pyro's Trace_ELBO on the padded and the unpadded batch, the guide's draws of the real
    items held equal: the same loss."""
    model, guide = pair()
    batch = ragged_batch(width=5)
    padded = pad_sets([batch["x"][s, batch["mask"][s]] for s in range(4)], 8)
    _, latents = set_log_weights(model, guide, padded)
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=2)
    loss_pad = elbo.loss(model, FixLatents(latents)(guide), **padded)
    loss = elbo.loss(model, FixLatents({"c": latents["c"], "z": latents["z"][:, :5]})(guide), **batch)
    assert loss_pad == pytest.approx(loss, rel=1e-6)


# ------------------------------------------------------------------------------ log p(D), closed form


def softplus_inverse(y):
    return math.log(math.expm1(y))


def linear_gaussian_pair(num_items, a=0.8, a0=0.3, s=0.7, wz=1.2, wc=-0.5, b=0.1, sigma=0.6, exact=True):
    """A statistician with 1-D c, z and x whose networks are linear (no hidden layer):
    p(z | c) = N(a c + a0, s^2), p(x | z, c) = N(wz z + wc c + b, sigma^2); and its guide set
    to the exact posterior of sets of ``num_items`` items (``exact=False``: perturbed)."""
    sizes = dict(x_dim=1, c_dim=1, z_dim=1, hidden_dims=())
    model = NeuralStatistician(**sizes, likelihood="gaussian", activation="relu")
    guide = StatisticianGuide(**sizes, feature_dim=1, activation="relu")
    lin = lambda module: module[0] if isinstance(module, torch.nn.Sequential) and len(module) == 1 else module  # noqa
    with torch.no_grad():
        for p in list(model.parameters()) + list(guide.parameters()):
            p.zero_()
        prior = lin(model.prior_net)  # c -> (loc, raw scale)
        prior.weight[0, 0], prior.bias[0], prior.bias[1] = a, a0, softplus_inverse(s - 1e-3)
        dec = lin(model.decoder)  # [z, c] -> (loc, raw scale)
        dec.weight[0, 0], dec.weight[0, 1], dec.bias[0], dec.bias[1] = wz, wc, b, softplus_inverse(sigma - 1e-3)
        # the exact posterior: c | D and z_i | x_i, c
        B, v, m = wz * a + wc, wz ** 2 * s ** 2 + sigma ** 2, wz * a0 + b
        post_var_c = 1.0 / (1.0 + num_items * B ** 2 / v)
        k = post_var_c * num_items * B / v  # E[c | D] = k (mean(x) - m)
        items, head = guide.statistic_net.items[0], guide.statistic_net.head
        items, head = lin(items), lin(head)
        items.weight[0, 0], items.bias[0] = 1.0, 100.0  # h(x) = x + 100 > 0: the ReLU is the identity
        head.weight[0, 0], head.bias[0] = k, -k * (100.0 + m)
        head.bias[1] = softplus_inverse(math.sqrt(post_var_c) - 1e-3)
        prec_z = 1 / s ** 2 + wz ** 2 / sigma ** 2  # z | x, c: N(var (a c + a0)/s^2 + var wz (x - wc c - b)/sigma^2)
        var_z = 1 / prec_z
        inf = lin(guide.inference_net)  # [x, c] -> (loc, raw scale)
        inf.weight[0, 0] = var_z * wz / sigma ** 2
        inf.weight[0, 1] = var_z * (a / s ** 2 - wz * wc / sigma ** 2)
        inf.bias[0] = var_z * (a0 / s ** 2 - wz * b / sigma ** 2)
        inf.bias[1] = softplus_inverse(math.sqrt(var_z) - 1e-3)
        if not exact:
            head.bias[0] += 0.3
            inf.bias[1] += 0.4
    closed = lambda x: MultivariateNormal(torch.full((num_items,), m),  # noqa: E731
                                          B ** 2 * torch.ones(num_items, num_items) + v * torch.eye(num_items)
                                          ).log_prob(x)
    return model, guide, closed


def test_log_p_D_importance_sampled_over_c_and_z_matches_the_closed_form():
    """A linear-Gaussian statistician: log p(D) is a Gaussian's (items exchangeable, covariance
    B^2 11' + v I). With the exact posterior as the guide every log-weight is log p(D) (c and z
    weighted jointly, per set, padding left out); with a perturbed guide the K=3000 estimate
    agrees to a few hundredths of a nat, closing the 0.45-nat gap of the ELBO."""
    num_items = 3
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 1.3 * torch.randn(6, num_items, generator=g)
    batch = pad_sets(list(x[..., None]), 5)  # 3 real items, 2 padded
    batch["x"][~batch["mask"]] = 7.0
    model, guide, closed = linear_gaussian_pair(num_items)
    exact = closed(x)
    with torch.no_grad():
        log_w = log_weights(model, guide, batch, 4)
    torch.testing.assert_close(log_w, exact.expand(4, 6), rtol=0, atol=1e-4)

    model, guide, _ = linear_gaussian_pair(num_items, exact=False)
    pyro.set_rng_seed(0)
    est = log_likelihood(model, guide, batch, num_samples=3000)
    errors = est.per_datapoint - exact
    assert float(errors.abs().max()) < 0.07  # seeds 0-2 give at most 0.035
    assert abs(float(errors.mean())) < 0.03
    assert est.elbo < float(exact.mean()) - 0.3  # the perturbed guide leaves a gap of about 0.45 that K closes


# ------------------------------------------------------------------------------ training


def test_fit_on_synthetic_sets_improves_log_p_D():
    train = distribution_sets(64, 30, min_size=10, seed=0)
    data = {k: train[k] for k in ("x", "mask", "sizes")}
    model, guide = pair(x_dim=1, c_dim=2, z_dim=2, hidden_dims=(16,))
    pyro.set_rng_seed(0)
    before = log_likelihood(model, guide, data, num_samples=20)
    result = fit(model, guide, data, epochs=6, batch_size=16, lr=1e-2, progress=False)
    assert all(math.isfinite(m["train_loss"]) for m in result.metrics)
    pyro.set_rng_seed(0)
    after = log_likelihood(model, guide, data, num_samples=20)
    assert after.log_likelihood > before.log_likelihood + 5.0  # nats per set of 10-30 items


def test_generate_and_sample_sets_shapes():
    model, guide = pair(likelihood="bernoulli")
    batch = ragged_batch()
    c = guide.context(batch["x"], batch["mask"]).mean
    new = model.generate(c, 7)
    assert new.shape == (4, 7, 2) and ((new >= 0) & (new <= 1)).all()
    assert model.sample_sets(3, 5, mean=False).shape == (3, 5, 2)


def test_bad_shapes_and_options_fail_clearly():
    model, guide = pair()
    with pytest.raises(ValueError, match=r"\(sets, items, D\)"):
        model(torch.zeros(2, 3, 4, 2))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        guide(torch.zeros(2, 3, 2), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        NeuralStatistician(x_dim=2, likelihood="poisson")
    with pytest.raises(ValueError, match="c_dim must be a positive integer"):
        StatisticianGuide(x_dim=2, c_dim=0)


def cli_fit(folder, *more):
    return run_cli("fit", "--model", "statistician", "--guide", "statistician", "--data", "synthetic-sets",
                   "--epochs", "1", "--batch-size", "500", "--c-dim", "2", "--z-dim", "2", "--hidden-dims", "8",
                   "--feature-dim", "8", "--no-progress", "--out", "run", *more, cwd=folder)


def test_cli_fit_on_the_synthetic_sets(tmp_path):
    """``pyrovae fit --model statistician --data synthetic-sets`` in a real process: the data
    set fills x_dim = 1 and the Gaussian likelihood, and the test log p(D) is printed."""
    done = cli_fit(tmp_path, "--eval-samples", "2")
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=2)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["likelihood"] == "gaussian" and saved["model"]["options"]["x_dim"] == 1
    assert saved["data"]["name"] == "synthetic-sets"


@pytest.mark.slow
def test_cli_fit_then_evaluate_on_the_synthetic_sets(tmp_path):
    """``pyrovae evaluate`` reloads the run and estimates log p(D) on the 1000 test sets (~30 s)."""
    done = cli_fit(tmp_path, "--eval-samples", "0")
    assert done.returncode == 0, done.stderr
    done = run_cli("evaluate", "run", "--num-samples", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1000 datapoints" in done.stdout


@pytest.mark.parametrize("likelihood, expected", [("gaussian", "torch"), ("bernoulli", "burda")])
def test_fit_default_init_follows_the_items(likelihood, expected):
    """fit without init: Gaussian items keep torch's layers (the biases of the statistic
    network's first layer drawn, not zeroed), binary items get Burda et al.'s (Glorot, zero
    biases, the decoder's output bias at the data's logits); init="burda" still applies to both."""
    from pyrovae.models import VariationalHomoencoder
    from pyrovae.nn import default_init

    model, guide = pair(likelihood)
    assert default_init(model) == expected
    assert default_init(VariationalHomoencoder(**SIZES, likelihood=likelihood)) == expected
    split = ragged_batch()
    if likelihood == "bernoulli":
        split["x"] = (split["x"] > 0).float() * split["mask"][..., None]
    data = {k: split[k] for k in ("x", "mask", "sizes")}
    first = guide.statistic_net.items[0][0]
    before = first.bias.detach().clone()
    fit(model, guide, data, epochs=1, batch_size=4, lr=1e-9, progress=False, valid_every=0)
    zeroed = bool(first.bias.abs().max() < 1e-6)
    assert zeroed == (expected == "burda")
    assert zeroed or torch.allclose(first.bias, before, atol=1e-6)
    model, guide = pair(likelihood)
    fit(model, guide, data, epochs=1, batch_size=4, lr=1e-9, progress=False, valid_every=0, init="burda")
    assert bool(guide.statistic_net.items[0][0].bias.abs().max() < 1e-6)


def test_pixelcnn_decoder_is_a_normalized_likelihood_over_items_and_fits():
    """decoder='pixelcnn' (the homoencoder's paper's decoder): p(x | z, c) sums to one over all
    2^6 items of 2x3 pixels; a homoencoder with it importance-samples log p(D) with particles,
    trains, draws new items; bad combinations are refused."""
    from pyrovae.guides import HomoencoderGuide
    from pyrovae.models import VariationalHomoencoder

    px = dict(decoder="pixelcnn", num_layers=2, pixel_channels=4, first_kernel_size=3, image_shape=(2, 3))
    torch.manual_seed(0)
    model = NeuralStatistician(x_dim=6, c_dim=2, z_dim=3, hidden_dims=(8,), **px)
    every = torch.tensor([[(i >> j) & 1 for j in range(6)] for i in range(64)], dtype=torch.float)
    with torch.no_grad():
        total = torch.logsumexp(model.observation(torch.randn(1, 3), torch.randn(1, 2), every).log_prob(every), 0)
    assert abs(float(total)) < 1e-4
    assert model.default_init == "torch"
    sizes = dict(x_dim=6, c_dim=2, z_dim=3, hidden_dims=(8,))
    vhe, guide = VariationalHomoencoder(**sizes, **px), HomoencoderGuide(**sizes, feature_dim=8)
    sets = vhe.example_batch(32, num_items=4)
    before = log_likelihood(vhe, guide, sets, num_samples=20).log_likelihood
    fit(vhe, guide, sets, epochs=30, batch_size=8, lr=1e-2, progress=False)
    assert log_likelihood(vhe, guide, sets, num_samples=20).log_likelihood > before + 0.5
    drawn = vhe.generate(torch.zeros(2, 2), num_items=3)
    assert drawn.shape == (2, 3, 6) and set(drawn.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="binary items"):
        NeuralStatistician(x_dim=6, likelihood="gaussian", decoder="pixelcnn")
    with pytest.raises(ValueError, match="unknown decoder"):
        NeuralStatistician(x_dim=6, decoder="rnn")
    with pytest.raises(ValueError, match="init='burda'"):
        fit(NeuralStatistician(x_dim=6, c_dim=2, z_dim=3, hidden_dims=(8,), **px),
            StatisticianGuide(**sizes, feature_dim=8), sets, epochs=1, batch_size=8, init="burda", progress=False)
    with pytest.raises(ValueError, match="pass x"):
        model.observation(torch.randn(1, 3), torch.randn(1, 2))
