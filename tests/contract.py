"""One contract, checked for every registered model and every registered guide, and for
any pair of callables (:func:`check_contract`).

The contract is three rules (docs/writing-a-pair.md): the model's and guide's latent sites
match; the batch arrives as keyword arguments; the data plate is the model's outermost plate,
or the one it declares. :func:`check_contract` checks them, a finite loss and a finite
non-zero gradient on every parameter, and finite per-datapoint log-weights. A registered
pair (:func:`check_pair`) is also checked for the IWAE bound and log-likelihood where the
guide has a density, and a save/load round trip through a run folder that reproduces the
log-weights exactly, and a checkpoint that holds the run, not the data: at most 4x the
parameters' bytes plus :data:`CHECKPOINT_FIXED_BYTES`, though the data it was fit on are views
of a storage far larger than that (:func:`views_of_larger_storage`).
"""

import math

import pyro
import pyro.poutine as poutine
import torch
from torch.distributions import constraints

from pyrovae import fit, load_run, log_likelihood, log_weights
from pyrovae.guides.base import has_density, objective_name_of
from pyrovae.infer.importance import (
    batch_size_of, bind_batch, data_dim, data_plate, declared_data_plate, latent_sites, observed_sites, sample_sites,
)
from pyrovae.infer.objectives import make_objective
from pyrovae.models.base import binary_batch
from pyrovae.registry import build, get_guide, get_model, pair_guide

X_DIM, Z_DIM, HIDDEN = 12, 3, (16,)
#: what a checkpoint holds besides parameters and optimizer state: random states, metrics, headers
CHECKPOINT_FIXED_BYTES = 64 * 1024


def build_pair(model_name, guide_name):
    options = {"z_dim": Z_DIM, "hidden_dims": HIDDEN}
    model_factory, guide_factory = get_model(model_name), get_guide(guide_name)
    accepted = lambda f: {k: v for k, v in options.items() if k in _options(f)}  # noqa: E731
    torch.manual_seed(0)
    fill = {"x_dim": X_DIM, "y_dim": X_DIM, "vocab_size": X_DIM}  # y_dim: the output of a conditional pair; vocab_size: text
    model = build(model_factory, accepted(model_factory), fill=fill)
    guide = build(guide_factory, accepted(guide_factory), fill=fill)
    return model, pair_guide(model, guide)


def _options(factory):
    from pyrovae.registry import constructor_options

    return constructor_options(factory)


def binary_data(n=32, d=X_DIM, seed=0):
    """Fixed random binary data, ``(n, d)``."""
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def data(n=16):
    return binary_data(n)


def contract_batch(model, n=16) -> dict:
    """The batch a registered model is checked on: its ``example_batch(n)`` (models/base.py's
    default: binary ``x`` (n, x_dim), and for a conditional model binary ``y`` (n, y_dim) too;
    a model of another shape of data, such as sequences, gives its own)."""
    example = getattr(model, "example_batch", None)
    return example(n) if callable(example) else binary_batch(model, n)


def views_of_larger_storage(batch: dict, extra_bytes: int) -> dict:
    """``batch``'s tensors, equal in value, as views of storages each at least ``extra_bytes``
    larger: what a batch sliced from a whole data set is (``torch.save`` of such a view writes
    the whole storage)."""
    views = {}
    for key, value in batch.items():
        row_bytes = max(1, value[:1].numel() * value.element_size())
        rows = len(value) + -(-extra_bytes // row_bytes)
        storage = torch.zeros((rows,) + tuple(value.shape[1:]), dtype=value.dtype)
        storage[:len(value)] = value
        views[key] = storage[:len(value)]
    return views


def check_samples(model, batch: dict, n: int = 7) -> None:
    """The model's draws of x ~ p(x) (:func:`~pyrovae.evaluation.sampling.prior_samples`, which
    reads no data): the data's row shape, finite, a function of the seed alone and not a
    constant; a draw lies in the support of the model's likelihood and differs from the
    likelihood's mean (an autoregressive decoder fed its own draws); a mean of p(x | z) lies in
    the hull of that support ([0, 1] for binary pixels)."""
    from pyrovae.evaluation.sampling import MEAN_TITLE, prior_samples

    draws = {}
    for seed in (0, 0, 1):
        pyro.set_rng_seed(seed)
        draws.setdefault(seed, []).append(prior_samples(model, n))
    (x, title), (again, _) = draws[0]
    other, _ = draws[1][0]
    assert x.shape == (n,) + tuple(batch["x"].shape[1:]) and torch.isfinite(x).all(), x.shape
    assert torch.equal(x, again), "the same seed gave other samples"
    assert not torch.equal(x, other), "two seeds gave the same samples: a constant, not draws"
    trace = poutine.trace(bind_batch(model, {"x": x})).get_trace(x=x)
    site = observed_sites(trace)[0]
    fn, value = site["fn"], site["value"]
    if title == MEAN_TITLE:
        support = fn.support.base_constraint if isinstance(fn.support, constraints.independent) else fn.support
        if support is constraints.boolean:  # a mean of binary pixels is a grey level
            assert (value >= 0).all() and (value <= 1).all(), "a mean of p(x | z) outside [0, 1]"
        return
    assert fn.support.check(value).all(), f"the draws lie outside the support of {fn}"
    assert not torch.allclose(value, fn.mean), "the draws are the likelihood's mean"


def check_trains_and_improves(model, guide, objective: str, epochs: int = 3):
    """A short fit (``objective``, K=3 particles for iwae) leaves finite losses and a higher
    importance-sampled log-likelihood (K=5) on the training data than before."""
    from pyrovae.infer.objectives import make_objective

    x = binary_data()
    before = log_likelihood(model, guide, x, num_samples=5)
    options = {"num_particles": 3} if objective == "iwae" else {}
    result = fit(model, guide, x, objective=make_objective(objective, **options), epochs=epochs, batch_size=8,
                 lr=1e-2, progress=False)
    assert all(math.isfinite(m["train_loss"]) for m in result.metrics)
    after = log_likelihood(model, guide, x, num_samples=5)
    assert torch.isfinite(after.per_datapoint).all()
    assert after.log_likelihood > before.log_likelihood


def check_contract(model, guide, batch, objective="elbo"):
    """Check that ``(model, guide)`` follows the three rules of the contract on ``batch`` (a
    dict of named tensors, one datapoint per row), for any callables: PyroModules or plain
    functions with ``pyro.param`` / ``pyro.module``, whatever their argument names.

    (a) the guide samples every latent site of the model, under the same names, and no other;
    (b) the batch arrives as keyword arguments (each callable gets the keys it accepts);
    (c) the data plate is the model's outermost plate, or the one its ``data_plate``
        attribute declares, and every sample site of both programs is inside it.

    Then the pair is usable: ``objective`` gives a finite scalar loss whose gradient reaches
    every parameter the pair uses, and the per-datapoint log-weights are finite, ``(K, N)``.
    """
    n = batch_size_of(batch)
    model_b, guide_b = bind_batch(model, batch), bind_batch(guide, batch)  # (b)
    guide_trace = poutine.trace(guide_b).get_trace(**batch)
    model_trace = poutine.trace(poutine.replay(model_b, trace=guide_trace)).get_trace(**batch)

    model_latents = {site["name"] for site in latent_sites(model_trace)}
    guide_latents = {site["name"] for site in latent_sites(guide_trace)}
    assert model_latents, "the model samples no latent site"
    assert model_latents == guide_latents, (  # (a)
        f"sites do not match: the model's latent sites are {sorted(model_latents)}, "
        f"the guide samples {sorted(guide_latents)}")
    assert observed_sites(model_trace), "the model observes no site (obs=)"

    declared = declared_data_plate(model)  # (c)
    for trace in (model_trace, guide_trace):
        plate = data_plate(trace, n, declared)
        assert plate is not None, "no sample site is inside a pyro.plate over the batch"
        for site in sample_sites(trace):
            data_dim(site, plate, n)  # raises, naming the site, if it is outside the data plate

    params = _pair_parameters(model, guide, model_trace, guide_trace)
    loss = (make_objective(objective) if isinstance(objective, str) else objective)(model_b, guide_b, batch, 0)
    assert loss.shape == () and torch.isfinite(loss), loss
    loss.backward()
    for pname, p in params.items():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"
        p.grad = None

    with torch.no_grad():
        log_w = log_weights(model_b, guide_b, batch, 2)
    assert log_w.shape == (2, n) and torch.isfinite(log_w).all(), log_w


def _pair_parameters(model, guide, *traces) -> dict:
    """Every trainable tensor of the pair: an nn.Module's parameters, and the unconstrained
    value of every ``pyro.param`` / ``pyro.module`` site the traces saw."""
    params = {}
    for owner in (model, guide):
        if isinstance(owner, torch.nn.Module):
            params.update({f"{type(owner).__name__}.{k}": p for k, p in owner.named_parameters() if p.requires_grad})
    store = pyro.get_param_store()
    seen = {name for trace in traces for name, site in trace.nodes.items() if site["type"] == "param"}
    for name, p in store.named_parameters():
        if name in seen and p.requires_grad and not any(p is q for q in params.values()):
            params[name] = p
    return params


def check_pair(model_name, guide_name, tmp_path):
    model, guide = build_pair(model_name, guide_name)
    objective = make_objective(objective_name_of(type(guide)))
    batch = contract_batch(model)
    check_contract(model, guide, batch, objective)
    model.zero_grad(), guide.zero_grad()

    if has_density(type(guide)):
        iwae = make_objective("iwae", num_particles=3)(model, guide, batch, 0)
        assert torch.isfinite(iwae)
        est = log_likelihood(model, guide, batch, num_samples=5)
        assert torch.isfinite(est.per_datapoint).all()

    param_bytes = sum(p.numel() * p.element_size() for m in (model, guide) for p in m.parameters())
    padding = 4 * param_bytes + 2 * CHECKPOINT_FIXED_BYTES
    result = fit(model, guide, views_of_larger_storage(batch, padding), objective=objective, epochs=2, batch_size=8,
                 progress=False, out_dir=tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in result.metrics)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        size = (tmp_path / "run" / name).stat().st_size
        assert size <= 4 * param_bytes + CHECKPOINT_FIXED_BYTES, (
            f"{name} is {size} bytes for {param_bytes} bytes of parameters: it keeps a view of the data")
    run = load_run(tmp_path / "run")
    assert type(run.model) is type(model) and type(run.guide) is type(guide)
    for a, b in ((model, run.model), (guide, run.guide)):
        for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(p, q), name
    model.eval(), guide.eval(), run.model.eval(), run.guide.eval()
    with torch.no_grad():
        pyro.set_rng_seed(1)
        before = log_weights(model, guide, batch, 2)
        pyro.set_rng_seed(1)
        after = log_weights(run.model, run.guide, batch, 2)
    assert torch.allclose(before, after, equal_nan=False)
