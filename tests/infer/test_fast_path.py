"""The fast path (pyrovae.infer.fast_path) leans on Pyro internals: this file fails loudly,
naming the installed Pyro, when they change, and checks that the objectives then take
Pyro's own path."""

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrovae.guides import DiagNormalGuide
from pyrovae.infer import fast_path
from pyrovae.infer.objectives import ELBO, MeanFieldELBO
from pyrovae.models import VAE

VERSION = f"pyro-ppl {pyro.__version__} (tested: 1.9.x; pyproject pins >=1.9,<1.10)"


def test_pyro_internals_the_fast_path_uses_are_there():
    missing = fast_path.missing_pyro_internals()
    assert not missing, (f"{VERSION} changed internals that pyrovae.infer.fast_path relies on: {missing}. "
                         "The objectives fall back to Pyro's differentiable_loss (slower, same numbers); "
                         "update fast_path.py for this Pyro or pin the tested range")
    assert fast_path.PYRO_INTERNALS_SUPPORTED


@pytest.mark.parametrize("objective, pyro_elbo", [(ELBO, Trace_ELBO), (MeanFieldELBO, TraceMeanField_ELBO)])
def test_fast_path_equals_pyro(objective, pyro_elbo):
    """The model's gradients bit for bit, the guide's to float rounding (log q of its Normal draw
    from the draw's noise); the loss to float rounding (Trace_ELBO's value is a float64 sum)."""
    torch.manual_seed(0)
    model, guide = VAE(10, 3, (8,)), DiagNormalGuide(10, 3, (8,))
    x = torch.bernoulli(torch.full((7, 10), 0.4))
    params = list(model.parameters()) + list(guide.parameters())
    results = []
    for fn in (lambda: pyro_elbo().differentiable_loss(model, guide, x=x) / 7,
               lambda: objective()(model, guide, {"x": x})):
        pyro.set_rng_seed(1)
        with pyro.validation_enabled(False):
            loss = fn()
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (a, ga), (b, gb) = results
    exact = len(list(model.parameters()))
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-6) and all(torch.equal(u, v) for u, v in zip(ga[:exact], gb[:exact])) \
        and all(torch.allclose(u, v, rtol=1e-5, atol=1e-6) for u, v in zip(ga[exact:], gb[exact:])), (
        f"the fast path no longer matches Pyro's {pyro_elbo.__name__} under {VERSION}")


def test_objectives_fall_back_to_pyro_when_internals_change(monkeypatch):
    """With the internals reported missing, ELBO calls Pyro's differentiable_loss, and
    quiet_pyro_modules does nothing."""
    monkeypatch.setattr(fast_path, "PYRO_INTERNALS_SUPPORTED", False)
    import pyrovae.infer.objectives as objectives

    monkeypatch.setattr(objectives, "PYRO_INTERNALS_SUPPORTED", False)
    calls = []
    monkeypatch.setitem(objectives._LEAN_LOSSES, Trace_ELBO, lambda *a: calls.append(a))
    model, guide = VAE(6, 2, (4,)), DiagNormalGuide(6, 2, (4,))
    with pyro.validation_enabled(False):
        loss = ELBO()(model, guide, {"x": torch.ones(3, 6)})
    assert not calls and torch.isfinite(loss)
    assert not fast_path.quiet_pyro_modules(model, guide).enabled


def test_missing_internal_is_named(monkeypatch):
    monkeypatch.delattr(Trace_ELBO, "_differentiable_loss_particle")
    assert any("Trace_ELBO._differentiable_loss_particle" in m for m in fast_path.missing_pyro_internals())



def _plated_program(x, made):
    """Nested plates; sites whose distributions have the full batch shape, need expanding, or
    have a size-1 dim to broadcast; a scale; a subsampled plate."""
    with pyro.plate("sets", x.shape[0], dim=-2):
        made["global"] = dist.Normal(torch.zeros(1, 1), 1.0)
        pyro.sample("g", made["global"])  # (1, 1) -> (N, 1)
        with pyro.plate("items", x.shape[1], dim=-1):
            made["full"] = dist.Normal(x, 0.5)
            a = pyro.sample("a", made["full"])  # already (N, M)
            made["row"] = dist.Normal(x[:1], 1.0)
            with pyro.poutine.scale(scale=0.3):
                pyro.sample("b", made["row"], obs=a)  # (1, M) -> (N, M)
            made["event"] = dist.Bernoulli(logits=x.unsqueeze(-1).expand(-1, -1, 3)).to_event(1)
            pyro.sample("c", made["event"])  # (N, M) batch, (3,) event
    with pyro.plate("sub", 10, subsample_size=4) as index:
        made["sub"] = dist.Normal(torch.zeros(4), 1.0)
        pyro.sample("s", made["sub"])
    return index


def test_lean_plates_are_pyros_plates_without_same_shape_copies():
    """Under quiet_pyro_modules, pyro.plate leaves a distribution that already has its plates'
    batch shape as it is (Pyro's plate would expand it to the same shape: a copy) and is
    Pyro's own plate otherwise: the same sites, shapes, frames, scales, values and densities."""
    from pyrovae.infer.importance import record_sites, site_log_prob

    x = torch.randn(5, 4)
    runs = []
    for quiet in (False, True):
        made = {}
        pyro.set_rng_seed(0)
        with fast_path.quiet_pyro_modules() if quiet else contextlib.nullcontext(), record_sites() as rec:
            index = _plated_program(x, made)
        runs.append((made, rec.sites, index))
    (_, pyro_sites, pyro_index), (made, lean_sites, lean_index) = runs
    assert list(pyro_sites) == list(lean_sites) and torch.equal(pyro_index, lean_index)
    for name, site in pyro_sites.items():
        lean = lean_sites[name]
        assert lean["cond_indep_stack"] == site["cond_indep_stack"] and lean["scale"] == site["scale"]
        assert torch.equal(lean["value"], site["value"])
        if name not in ("sets", "items", "sub"):  # the plates' subsample sites
            assert lean["fn"].batch_shape == site["fn"].batch_shape and lean["fn"].event_shape == site["fn"].event_shape
            assert torch.equal(site_log_prob(lean), site_log_prob(site))
    # full-shaped distributions are kept as made, the others expanded as Pyro does
    assert lean_sites["a"]["fn"] is made["full"] and lean_sites["c"]["fn"] is made["event"]
    assert lean_sites["s"]["fn"] is made["sub"]
    assert lean_sites["g"]["fn"] is not made["global"] and lean_sites["b"]["fn"] is not made["row"]
    assert pyro.plate is pyro.primitives.plate  # restored


def test_lean_plates_raise_pyros_shape_errors():
    def program():
        with pyro.plate("data", 5):
            pyro.sample("z", dist.Normal(torch.zeros(4), 1.0))

    with pytest.raises(ValueError, match="Shape mismatch inside plate"):
        program()
    with fast_path.quiet_pyro_modules(), pytest.raises(ValueError, match="Shape mismatch inside plate"):
        program()
