"""The von Mises-Fisher guide and the hyperspherical VAE: the sphere, the concentration head,
fixed kappa, the particle plate, and training with elbo / iwae / meanfield."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovae import fit
from pyrovae.distributions import HypersphericalUniform, VonMisesFisher
from pyrovae.guides import VonMisesFisherGuide
from pyrovae.models import HypersphericalVAE
from pyrovae.infer.objectives import make_objective

from tests.contract import binary_data, check_trains_and_improves


def pair(**guide_options):
    torch.manual_seed(0)
    return HypersphericalVAE(12, 3, (16,)), VonMisesFisherGuide(12, 3, (16,), **guide_options)


def test_encoder_gives_unit_directions_and_concentrations_above_one():
    _, guide = pair()
    q = guide.encode(binary_data(5))
    assert isinstance(q, VonMisesFisher)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert torch.allclose(q.loc.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert (q.concentration > 1).all()
    fixed = VonMisesFisherGuide(12, 3, (16,), fixed_kappa=50.0)
    assert fixed.encoder[-1].out_features == 3  # no concentration head
    assert torch.equal(fixed.encode(binary_data(5)).concentration, torch.full((5,), 50.0))


def test_samples_lie_on_the_sphere_under_the_particle_plate():
    model, guide = pair()
    x = binary_data(6)
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    assert z.shape == (4, 6, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4, 6), atol=1e-5)
    trace.compute_log_prob()
    assert trace.nodes["z"]["log_prob"].shape == (4, 6)


def test_the_model_has_a_uniform_prior_on_the_sphere():
    model, _ = pair()
    prior = model.prior(7)
    assert isinstance(prior, HypersphericalUniform) and prior.batch_shape == (7,)
    assert float(prior.log_prob(prior.sample())[0]) == pytest.approx(-math.log(4 * math.pi))
    assert model.sample(5).shape == (5, 12)
    assert model(num_samples=3).shape == (3, 12)
    with pytest.raises(ValueError, match="z_dim >= 2"):
        HypersphericalVAE(12, 1)
    with pytest.raises(ValueError, match="z_dim >= 2"):
        VonMisesFisherGuide(12, 1)
    with pytest.raises(ValueError, match="fixed_kappa"):
        VonMisesFisherGuide(12, 3, fixed_kappa=0.0)


def kappa_gradients_with_and_without_correction():
    x = binary_data(16)
    grads = []
    for correction in (True, False):
        model, guide = pair(gradient_correction=correction)
        pyro.set_rng_seed(3)
        make_objective("elbo")(model, guide, {"x": x}, 0).backward()
        grads.append(guide.encoder[-1].weight.grad[-1].clone())  # the concentration row
    return grads


def test_the_score_function_correction_reaches_the_concentration_head():
    """With elbo the kappa head gets the correction's gradient; without it, a different gradient."""
    with_correction, without = kappa_gradients_with_and_without_correction()
    assert not torch.allclose(with_correction, without)


def test_the_correction_survives_with_validation_off():
    with pyro.validation_enabled(False):
        with_correction, without = kappa_gradients_with_and_without_correction()
    assert not torch.allclose(with_correction, without)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_and_evaluates(objective):
    model, guide = pair()
    check_trains_and_improves(model, guide, objective)


def test_meanfield_needs_the_correction_off_or_a_fixed_kappa():
    x = binary_data()
    for options in ({"gradient_correction": False}, {"fixed_kappa": 20.0}):
        model, guide = pair(**options)
        result = fit(model, guide, x, objective="meanfield", epochs=2, batch_size=8, progress=False)
        assert all(math.isfinite(m["train_loss"]) for m in result.metrics)
    model, guide = pair()
    with pytest.raises(NotImplementedError, match="reparameterized"):
        fit(model, guide, x, objective="meanfield", epochs=1, batch_size=8, progress=False)


def test_fixed_kappa_makes_the_kl_a_constant():
    model, guide = pair(fixed_kappa=20.0)
    x = binary_data(8)
    q, p = guide.encode(x), model.prior(8)
    kl = torch.distributions.kl_divergence(q, p)
    assert torch.allclose(kl, kl[0].expand(8)) and kl[0] > 0
    assert not kl.requires_grad
