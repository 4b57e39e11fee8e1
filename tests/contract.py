"""One contract, checked for every registered model and every registered guide.

A pair is built at small sizes, trained for a few steps with its objective, and checked:
latent shapes, a finite loss, a finite non-zero gradient on every parameter, the IWAE bound
and log-likelihood where the guide has a density, and a save/load round trip through a run
folder that reproduces the log-weights exactly.
"""

import math

import pyro
import pyro.poutine as poutine
import torch

from pyrovae import fit, load_run, log_likelihood, log_weights
from pyrovae.infer.objectives import make_objective
from pyrovae.registry import build, get_guide, get_model

X_DIM, Z_DIM, HIDDEN = 12, 3, (16,)


def build_pair(model_name, guide_name):
    options = {"z_dim": Z_DIM, "hidden_dims": HIDDEN}
    model_factory, guide_factory = get_model(model_name), get_guide(guide_name)
    accepted = lambda f: {k: v for k, v in options.items() if k in _options(f)}  # noqa: E731
    torch.manual_seed(0)
    model = build(model_factory, accepted(model_factory), fill={"x_dim": X_DIM})
    guide = build(guide_factory, accepted(guide_factory), fill={"x_dim": X_DIM})
    return model, guide


def _options(factory):
    from pyrovae.registry import constructor_options

    return constructor_options(factory)


def binary_data(n=32, d=X_DIM, seed=0):
    """Fixed random binary data, ``(n, d)``."""
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def data(n=16):
    return binary_data(n)


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


def check_pair(model_name, guide_name, tmp_path):
    model, guide = build_pair(model_name, guide_name)
    objective = make_objective(getattr(type(guide), "objective_name", "elbo"))
    x = data()
    batch = {"x": x}

    guide_trace = poutine.trace(guide).get_trace(x=x)
    latents = {name: site for name, site in guide_trace.nodes.items()
               if site["type"] == "sample" and not site["is_observed"] and type(site["fn"]).__name__ != "_Subsample"}
    assert latents, "the guide samples no latent site"
    for name, site in latents.items():
        assert site["value"].shape[0] == len(x), (name, site["value"].shape)

    loss = objective(model, guide, batch, 0)
    assert loss.shape == () and torch.isfinite(loss), loss
    loss.backward()
    for owner in (model, guide):
        for pname, p in owner.named_parameters():
            if not p.requires_grad:
                continue
            assert p.grad is not None, f"{type(owner).__name__}.{pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{type(owner).__name__}.{pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{type(owner).__name__}.{pname} has an all-zero gradient"
    model.zero_grad(), guide.zero_grad()

    if getattr(type(guide), "has_density", True):
        iwae = make_objective("iwae", num_particles=3)(model, guide, batch, 0)
        assert torch.isfinite(iwae)
        est = log_likelihood(model, guide, x, num_samples=5)
        assert torch.isfinite(est.per_datapoint).all()

    result = fit(model, guide, x, objective=objective, epochs=2, batch_size=8, progress=False,
                 out_dir=tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in result.metrics)
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
