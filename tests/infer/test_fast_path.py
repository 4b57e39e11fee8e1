"""The fast path (pyrovae.infer.fast_path) leans on Pyro internals: this file fails loudly,
naming the installed Pyro, when they change, and checks that the objectives then take
Pyro's own path."""

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

