"""The hierarchical VAE (models/hierarchical.py) with its two guides (guides/hierarchical.py):
the contract for two and other numbers of layers, the Ladder VAE's precision-weighted merge
against the closed form of a product of Gaussian densities, the ladder guide's top-down
parameters being the model's (one tensor, not two copies; saved once, rebound on load), the
importance-sampled log p(x) over both layers (it sums to one over every binary x), and the real
``pyrovae`` command for each pair."""

import functools
import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F

from pyrovae import fit, load_run, log_likelihood, log_weights
from pyrovae.errors import UsageError
from pyrovae.infer.importance import latent_sites
from pyrovae.guides.hierarchical import BottomUpGuide, LadderGuide, precision_weighted
from pyrovae.models.hierarchical import HierarchicalVAE, active_units_per_layer
from pyrovae.models.vae import VAE
from pyrovae.registry import build, get_guide, get_model, get_objective, pair_guide
from tests.cli.helpers import pyrovae
from tests.contract import binary_data, check_contract, check_pair, check_trains_and_improves

SIZES = dict(x_dim=12, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(6,))


def pair(guide_cls, **sizes):
    torch.manual_seed(0)
    model = HierarchicalVAE(**{**SIZES, **sizes})
    guide = LadderGuide.for_model(model) if guide_cls is LadderGuide else guide_cls(**{**SIZES, **sizes})
    return model, guide


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("guide_name", ["hvae", "ladder"])
def test_registered_pairs_meet_the_contract_and_save_and_load(guide_name, tmp_path):
    check_pair("hvae", guide_name, tmp_path)


@pytest.mark.parametrize("guide_cls", [BottomUpGuide, LadderGuide])
@pytest.mark.parametrize("lower", [(), (3,), (5, 4, 3)])
def test_any_number_of_layers(guide_cls, lower):
    """L = 1 (the one-layer VAE), 2 and 4 layers: sites z1..zL, the model samples from the top
    down, the guide in its own order, and the pair meets the contract."""
    model, guide = pair(guide_cls, lower_z_dims=lower)
    num_layers = len(lower) + 1
    x = binary_data(8)
    trace = poutine.trace(model).get_trace(x)
    latent = [site["name"] for site in latent_sites(trace)]
    assert latent == [f"z{i}" for i in range(num_layers, 0, -1)]
    assert [trace.nodes[f"z{i + 1}"]["value"].shape[-1] for i in range(num_layers)] == [*lower, 2]
    check_contract(model, guide, {"x": x})
    assert model.sample(4).shape == (4, 12)


@pytest.mark.parametrize("guide_cls", [BottomUpGuide, LadderGuide])
def test_trains_and_improves(guide_cls):
    model, guide = pair(guide_cls)
    check_trains_and_improves(model, guide, "elbo")


# ---------------------------------------------------------------- the precision-weighted merge


def test_precision_weighted_merge_is_the_normalised_product_of_the_two_densities():
    """N(z; m1, s1^2) N(z; m2, s2^2) = N(m1; m2, s1^2 + s2^2) N(z; m, s^2) with the merged (m, s):
    checked pointwise on a grid (and the product's integral, by the trapezoid rule, is the
    normalising constant)."""
    normal = torch.distributions.Normal
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(5, generator=g, dtype=torch.float64), 3 * torch.randn(5, generator=g, dtype=torch.float64)
    s1, s2 = 0.2 + torch.rand(5, generator=g, dtype=torch.float64), 0.2 + 2 * torch.rand(5, generator=g, dtype=torch.float64)
    m, s = precision_weighted(m1, s1, m2, s2)
    z = torch.linspace(-15, 15, 60001, dtype=torch.float64).unsqueeze(-1)
    product = (normal(m1, s1).log_prob(z) + normal(m2, s2).log_prob(z)).exp()
    constant = normal(m2, (s1 ** 2 + s2 ** 2).sqrt()).log_prob(m1).exp()
    torch.testing.assert_close(torch.trapezoid(product, z, dim=0), constant, rtol=1e-7, atol=0)
    torch.testing.assert_close(product / constant, normal(m, s).log_prob(z).exp(), rtol=1e-9, atol=1e-12)
    # the formula as written: sigma^2 = 1 / (s1^-2 + s2^-2), mu = (m1 s1^-2 + m2 s2^-2) sigma^2
    torch.testing.assert_close(s ** 2, 1 / (s1 ** -2 + s2 ** -2))
    torch.testing.assert_close(m, (m1 / s1 ** 2 + m2 / s2 ** 2) * s ** 2)
    # a very precise estimate dominates; equal precisions average
    loc, scale = precision_weighted(torch.tensor(1.0), torch.tensor(1e-4), torch.tensor(-5.0), torch.tensor(1.0))
    assert abs(float(loc) - 1.0) < 1e-6 and float(scale) < 1e-4
    loc, scale = precision_weighted(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(2.0))
    assert float(loc) == pytest.approx(2.0) and float(scale) == pytest.approx(math.sqrt(2.0))


def test_the_ladder_guide_merges_its_bottom_up_estimate_with_the_models_top_down_conditional():
    """q(z_i | z_{i+1}, x) of the traced guide is the precision-weighted merge of the bottom-up
    (mu_hat_i, sigma_hat_i) and the model's p(z_i | z_{i+1}) at the drawn z_{i+1}; the top layer
    is the bottom-up estimate alone."""
    model, guide = pair(LadderGuide, lower_z_dims=(5, 3))
    x = binary_data(6)
    trace = poutine.trace(guide).get_trace(x)
    estimates = guide.bottom_up_pass(x)
    top = trace.nodes["z3"]["fn"].base_dist
    torch.testing.assert_close(top.loc, estimates[2][0])
    torch.testing.assert_close(top.scale, estimates[2][1])
    for i in (1, 0):
        q = trace.nodes[f"z{i + 1}"]["fn"].base_dist
        loc_p, scale_p = model.conditional(i, trace.nodes[f"z{i + 2}"]["value"])
        loc, scale = precision_weighted(*estimates[i], loc_p, scale_p)
        torch.testing.assert_close(q.loc, loc)
        torch.testing.assert_close(q.scale, scale)
        assert (q.scale < torch.minimum(estimates[i][1], scale_p)).all()  # merging sharpens both


# ---------------------------------------------------------------- one top-down network, the model's


def test_the_ladder_guide_reads_the_models_top_down_parameters_not_a_copy():
    model, guide = pair(LadderGuide)
    model_params, guide_params = list(model.parameters()), list(guide.parameters())
    assert not any(p is q for p in guide_params for q in model_params)
    assert not any(k.startswith("top_down") or "_model" in k for k in guide.state_dict())
    assert all("top_down" not in name for name, _ in guide.named_parameters())
    # the guide's q(z1 | z2, x) moves with the model's top-down tensor, and its gradient reaches it
    x = binary_data(4)
    pyro.set_rng_seed(0)
    before = poutine.trace(guide).get_trace(x).nodes["z1"]["fn"].base_dist.loc
    with torch.no_grad():
        model.top_down[0][-1].bias.add_(1.0)
    pyro.set_rng_seed(0)
    trace = poutine.trace(guide).get_trace(x)
    assert not torch.allclose(trace.nodes["z1"]["fn"].base_dist.loc, before)
    trace.nodes["z1"]["fn"].base_dist.loc.sum().backward()
    assert model.top_down[0][-1].bias.grad.abs().sum() > 0
    # fit trains each tensor once: the pair's parameters are distinct
    ids = [id(p) for p in model_params + guide_params]
    assert len(ids) == len(set(ids))


def test_fit_saves_the_top_down_network_once_and_load_run_rebinds_the_guide(tmp_path):
    model, guide = pair(LadderGuide)
    x = binary_data(16)
    fit(model, guide, x, epochs=1, batch_size=8, progress=False, out_dir=tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("top_down") for k in checkpoint["model"])
    assert not any("top_down" in k for k in checkpoint["guide"])
    run = load_run(tmp_path / "run")
    assert type(run.guide) is LadderGuide and run.guide.model is run.model
    pyro.set_rng_seed(1)
    a = log_weights(model, guide, {"x": x}, 3)
    pyro.set_rng_seed(1)
    b = log_weights(run.model, run.guide, {"x": x}, 3)
    torch.testing.assert_close(a, b)


def test_an_unbound_or_mismatched_ladder_guide_says_so_in_one_line():
    guide = LadderGuide(**SIZES)
    with pytest.raises(UsageError, match="has no model.*for_model") as error:
        guide(binary_data(2))
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="not of VAE.*--model hvae"):
        guide.bind_model(VAE(x_dim=12, z_dim=2))
    with pytest.raises(UsageError, match=r"layers \(3, 2\).*\(4, 2\)"):
        guide.bind_model(HierarchicalVAE(**{**SIZES, "lower_z_dims": (4,)}))
    model = build(get_model("hvae"), {k: v for k, v in SIZES.items() if k != "x_dim"}, fill={"x_dim": 12})
    built = build(get_guide("ladder"), {k: v for k, v in SIZES.items() if k != "x_dim"}, fill={"x_dim": 12})
    assert pair_guide(model, built).model is model
    assert pair_guide(model, BottomUpGuide(**SIZES)) is not None  # other guides: left as they are


# ---------------------------------------------------------------- log p(x) over both layers


@pytest.mark.parametrize("guide_cls", [BottomUpGuide, LadderGuide])
def test_importance_sampled_p_x_sums_to_one_over_every_binary_x(guide_cls):
    """log p(x) is importance-sampled over z1 and z2 jointly: the estimate of p(x) is unbiased,
    so over all 2^4 binary images of 4 pixels it sums to 1 (K = 4000 each; seeds 0-3 gave
    0.989-1.021 with the bottom-up guide, 0.993-1.008 with the ladder)."""
    model, guide = pair(guide_cls, x_dim=4, hidden_dims=(6,), lower_z_dims=(3,))
    with torch.no_grad():
        model.decoder[-1].weight.mul_(4.0)  # a sharper decoder than at initialization: p(x) far from uniform
        heads = [guide.heads[0], guide.heads[1]] if guide_cls is LadderGuide else [guide.encoder[-1], guide.up[0][-1]]
        for head in heads:  # a wide proposal (scales softplus(1.5) = 1.7), so the weights are light-tailed
            half = head.bias.shape[0] // 2
            head.weight[half:].zero_()
            head.bias[half:] = 1.5
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    pyro.set_rng_seed(0)
    est = log_likelihood(model, guide, xs, num_samples=4000)
    assert est.per_datapoint.exp().sum() == pytest.approx(1.0, abs=0.05)
    assert est.per_datapoint.exp().max() > 2 / 16  # not uniform: the check has teeth
    # and each log-weight is log p(x, z1, z2) - log q(z1, z2 | x), both layers counted
    pyro.set_rng_seed(3)
    log_w, guide_trace, model_trace = log_weights(model, guide, {"x": xs}, 2, return_traces=True)
    by_hand = sum(model_trace.nodes[n]["log_prob"] for n in ("z2", "z1", "x")) \
        - sum(guide_trace.nodes[n]["log_prob"] for n in ("z1", "z2"))
    torch.testing.assert_close(log_w, by_hand)


def test_active_units_per_layer():
    """Burda et al.'s count per layer: a guide whose layers ignore x has none active; the
    count is per layer and sized by it."""
    model, guide = pair(LadderGuide, lower_z_dims=(3,))
    with torch.no_grad():
        guide.bottom_up[0][0].weight.zero_()  # the bottom-up pass no longer sees x
    units = active_units_per_layer(guide, binary_data(50), num_samples=50)
    assert units == {"z2": (0, 2), "z1": (0, 3)}
    with torch.no_grad():
        guide.bottom_up[0][0].weight.normal_(0, 3.0)
        guide.heads[0].weight.normal_(0, 3.0)
    units = active_units_per_layer(guide, binary_data(50), num_samples=50)
    assert units["z1"][0] > 0


def _elbo_terms(model, guide, x, seed=0):
    """Per-datapoint ``log p(x | z1)`` and ``log p(z) - log q(z | x)`` summed over the layers,
    one draw of the guide (seeded), the model replayed on it."""
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob(), model_trace.compute_log_prob()
    names = [site["name"] for site in latent_sites(guide_trace)]
    kl = sum(guide_trace.nodes[n]["log_prob"] - model_trace.nodes[n]["log_prob"] for n in names)
    return model_trace.nodes["x"]["log_prob"], kl


SOFTPLUS_INV_1 = math.log(math.expm1(1.0 - 1e-4))  # scale_from(this) == 1: softplus, then the 1e-4 floor


def test_one_layer_hvae_is_the_vae_and_a_second_layer_at_the_prior_changes_nothing():
    """The diagnostic behind docs/hierarchical.md's 'no wiring defect': (a) ``hvae`` with no
    lower layer and the bottom-up guide is the one-layer ``vae`` (same weights, same draws: the
    same ELBO terms); (b) two layers whose top-down network outputs N(0, I) for z1 and whose
    q(z2 | z1) is N(0, I) are that one-layer model with z = z1 exactly (the z2 terms cancel and
    z1 is drawn, scored and decoded as in one layer). A decoder fed the mean of z1 instead of
    the draw, misordered layers or a scale parameterization off by a constant fails."""
    sizes = dict(x_dim=12, hidden_dims=(8,), activation="tanh")
    x = binary_data(20)
    torch.manual_seed(0)
    one = HierarchicalVAE(z_dim=3, lower_z_dims=(), **sizes)
    one_guide = BottomUpGuide(z_dim=3, lower_z_dims=(), **sizes)
    vae, vae_guide = VAE(z_dim=3, **sizes), get_guide("diag")(z_dim=3, **sizes)
    vae.decoder.load_state_dict(one.decoder.state_dict())
    vae_guide.encoder.load_state_dict(one_guide.encoder.state_dict())
    for a, b in zip(_elbo_terms(one, one_guide, x), _elbo_terms(vae, vae_guide, x)):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)  # the scale floors differ: 1e-4 and 1e-5

    two = HierarchicalVAE(z_dim=2, lower_z_dims=(3,), upper_hidden_dims=(5,), **sizes)
    two_guide = BottomUpGuide(z_dim=2, lower_z_dims=(3,), upper_hidden_dims=(5,), **sizes)
    two.decoder.load_state_dict(one.decoder.state_dict())
    two_guide.encoder.load_state_dict(one_guide.encoder.state_dict())
    with torch.no_grad():
        for last, (loc_dim, scale_dim) in ((two.top_down[0][-1], (3, 3)), (two_guide.up[0][-1], (2, 2))):
            last.weight.zero_(), last.bias.zero_()
            last.bias[loc_dim:loc_dim + scale_dim] = SOFTPLUS_INV_1
    ll_two, kl_two = _elbo_terms(two, two_guide, x)
    ll_one, kl_one = _elbo_terms(one, one_guide, x)
    torch.testing.assert_close(ll_two, ll_one)
    torch.testing.assert_close(kl_two, kl_one, atol=1e-5, rtol=1e-5)


def test_relative_active_units_do_not_depend_on_a_layers_scale():
    """Burda et al.'s absolute threshold counts a layer living at scale 0.05 as inactive even
    when x sets it; the relative count (``relative=True``) is the same at any scale, and still
    zero for units that ignore x."""
    x = torch.randn(200, 4)

    def guide(x, c=1.0):
        loc = torch.cat([x[:, :2], torch.zeros(x.shape[0], 2)], -1)  # units 0, 1 follow x; 2, 3 do not
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(c * loc, c * 0.5).to_event(1))

    for c, absolute in ((1.0, 2), (0.05, 0)):
        scaled = functools.partial(guide, c=c)
        assert active_units_per_layer(scaled, x, num_samples=50) == {"z1": (absolute, 4)}
        assert active_units_per_layer(scaled, x, num_samples=50, relative=True) == {"z1": (2, 4)}


# ---------------------------------------------------------------- gradients through the layers


def _normal_log_prob(loc, scale, z):
    """log N(z; loc, diag scale^2), summed over the last axis, written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _noise(guide, x, seed):
    """The standard-normal noise behind each layer's draw of the guide at pyro seed ``seed``:
    ``(z - loc) / scale``, detached (so the hand-written bound below uses the same draws)."""
    pyro.set_rng_seed(seed)
    trace = poutine.trace(guide).get_trace(x)
    return [((site["value"] - site["fn"].base_dist.loc) / site["fn"].base_dist.scale).detach()
            for site in (trace.nodes[name] for name in guide.sites)]


def _negative_elbo_by_hand(model, guide, x, eps):
    """-(1/N) sum_n [log p(x, z_1..z_L) - log q(z_1..z_L | x)] at z = loc + scale * eps, every
    density written from the networks' outputs (no Pyro): z_L ~ N(0, I), z_i | z_{i+1} from
    the model's top-down network evaluated at the *reparameterized* z_{i+1}, x | z_1 Bernoulli."""
    num_layers, z = len(guide.z_dims), [None] * len(guide.z_dims)
    split = lambda out, i: (out[..., :guide.z_dims[i]], F.softplus(out[..., guide.z_dims[i]:]) + 1e-4)
    log_q = 0.0
    if isinstance(guide, BottomUpGuide):
        loc, scale = split(guide.encoder(x), 0)
        for i in range(num_layers):
            if i > 0:
                loc, scale = split(guide.up[i - 1](z[i - 1]), i)
            z[i] = loc + scale * eps[i]
            log_q = log_q + _normal_log_prob(loc, scale, z[i])
    else:  # the ladder: the bottom-up estimates, then the top-down pass merged with the model's conditional
        d, estimates = x, []
        for i in range(num_layers):
            d = guide.bottom_up[i](d)
            estimates.append(split(guide.heads[i](d), i))
        for i in reversed(range(num_layers)):
            loc, scale = estimates[i]
            if i < num_layers - 1:
                loc_p, scale_p = split(model.top_down[i](z[i + 1]), i)
                variance = 1 / (scale ** -2 + scale_p ** -2)
                loc, scale = (loc / scale ** 2 + loc_p / scale_p ** 2) * variance, variance.sqrt()
            z[i] = loc + scale * eps[i]
            log_q = log_q + _normal_log_prob(loc, scale, z[i])
    log_p = _normal_log_prob(torch.zeros(()), torch.ones(()), z[-1])
    for i in range(num_layers - 1):
        log_p = log_p + _normal_log_prob(*split(model.top_down[i](z[i + 1]), i), z[i])
    logits = model.decoder(z[0])
    log_p = log_p + (x * logits - F.softplus(logits)).sum(-1)
    return -(log_p - log_q).mean()


@pytest.mark.parametrize("guide_cls", [BottomUpGuide, LadderGuide])
def test_the_elbos_gradients_flow_through_every_reparameterized_layer(guide_cls):
    """The suite's ``elbo`` objective gives the gradients of the single-sample bound written out
    by hand with the same noise (:func:`_negative_elbo_by_hand`), for every parameter of the
    guide, its upper layers included, and of the model (three layers; float32, rtol 1e-4).
    log p(z_i | z_{i+1}) depends on the guide through the reparameterized z_{i+1}: a model that
    evaluates it at ``z_{i+1}.detach()`` has the same loss but drops that path, and fails here."""
    model, guide = pair(guide_cls, lower_z_dims=(4, 3))
    with torch.no_grad():  # sharper top-down conditionals than at initialization: a large path term
        for net in model.top_down:
            net[-1].weight.mul_(3.0)
    x = binary_data(10)
    eps = _noise(guide, x, seed=4)
    params = list(itertools.chain(guide.parameters(), model.parameters()))  # every layer of both
    by_hand = _negative_elbo_by_hand(model, guide, x, eps)
    expected = torch.autograd.grad(by_hand, params)
    pyro.set_rng_seed(4)
    loss = get_objective("elbo")()(model, guide, {"x": x})
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-5)  # the same draws
    actual = torch.autograd.grad(loss, params)
    names = [f"guide.{n}" for n, _ in guide.named_parameters()] + [f"model.{n}" for n, _ in model.named_parameters()]
    for name, a, e in zip(names, actual, expected):
        assert e.abs().max() > 0, name
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------- the command line


QUICK = ["--data", "digits", "--epochs", "1", "--z-dim", "2", "--lower-z-dims", "4", "--hidden-dims", "16",
         "--upper-hidden-dims", "8", "--eval-samples", "5", "--no-progress", "--kl-warmup", "10"]


@pytest.mark.parametrize("guide_name", ["hvae", "ladder"])
def test_cli_fit_then_evaluate(guide_name, tmp_path):
    """pyrovae fit --model hvae --guide hvae|ladder (with KL warm-up), then evaluate the run, in
    fresh processes; the ladder run saves the top-down network once, in the model."""
    done = pyrovae("fit", "--model", "hvae", "--guide", guide_name, *QUICK, "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["guide"]["name"] == guide_name and saved["model"]["options"]["lower_z_dims"] == [4]
    assert saved["objective"]["warmup_steps"] == 10
    done = pyrovae("evaluate", tmp_path / "run", "--num-samples", "20", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert math.isfinite(result["log_likelihood"]) and result["log_likelihood"] < 0


def test_cli_ladder_with_another_model_fails_in_one_line(tmp_path):
    from tests.cli.helpers import one_line_error

    done = pyrovae("fit", "--model", "vae", "--guide", "ladder", "--data", "digits", "--epochs", "1", "--no-progress",
                   "--out", tmp_path / "run", cwd=tmp_path)
    one_line_error(done, 2, "guide 'ladder' reads the top-down network of model 'hvae'")


@pytest.mark.parametrize("guide_class", [LadderGuide, BottomUpGuide])
def test_hvae_warms_its_kl_up_by_default_from_python_and_the_command_line(guide_class, tmp_path):
    """Without a warm-up the ladder stays on its early plateau, 11.8 nats behind the one-layer VAE
    at the default fit (docs/hierarchical.md#the-default-kl-warm-up): ``fit`` and ``pyrovae fit``
    give hvae's objective ``warmup_steps=2500`` unless an option or an Objective says otherwise."""
    from pyrovae.cli.fit import build_parser
    from pyrovae.infer.objectives import ELBO

    def objective_of(out, **kwargs):
        model = HierarchicalVAE(x_dim=6, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(4,))
        guide = (LadderGuide.for_model(model) if guide_class is LadderGuide else
                 BottomUpGuide(x_dim=6, z_dim=2, lower_z_dims=(3,), hidden_dims=(8,), upper_hidden_dims=(4,)))
        fit(model, guide, {"x": binary_data(8, 6)}, epochs=1, batch_size=4, progress=False, figures=False,
            out_dir=tmp_path / out, **kwargs)
        return json.loads((tmp_path / out / "run.json").read_text())["objective"]

    assert objective_of("default")["warmup_steps"] == 2500
    assert objective_of("named", objective="iwae")["warmup_steps"] == 2500
    assert objective_of("given", objective=ELBO())["warmup_steps"] == 0
    name = "ladder" if guide_class is LadderGuide else "hvae"
    assert build_parser("hvae", name, "elbo").parse_args([]).obj_warmup_steps == 2500
    assert build_parser("hvae", name, "elbo").parse_args(["--kl-warmup", "0"]).obj_warmup_steps == 0
