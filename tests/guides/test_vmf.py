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


def kappa_head_gradient(objective, **options):
    """The gradient of the concentration row of the encoder's last layer under ``objective``."""
    model, guide = pair()
    pyro.set_rng_seed(3)
    make_objective(objective, **options)(model, guide, {"x": binary_data(16)}, 0).backward()
    return guide.encoder[-1].weight.grad[-1].clone()


def test_iwae_with_one_particle_gets_the_elbo_gradient_in_the_concentration():
    """rsample carries the whole kappa gradient (no score-function term that only Trace_ELBO
    reads), so the IWAE bound at K = 1, which is the ELBO, gets the same gradient as elbo."""
    elbo = kappa_head_gradient("elbo")
    iwae = kappa_head_gradient("iwae", num_particles=1)
    assert elbo.abs().max() > 0
    assert torch.allclose(elbo, iwae, rtol=1e-4, atol=1e-6), (elbo, iwae)


def test_the_concentration_gradient_does_not_depend_on_validation():
    with pyro.validation_enabled(False):
        off = kappa_head_gradient("elbo")
    assert torch.allclose(off, kappa_head_gradient("elbo"))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_and_evaluates(objective):
    model, guide = pair()
    check_trains_and_improves(model, guide, objective)


def test_meanfield_trains_with_a_learned_or_a_fixed_kappa():
    x = binary_data()
    for options in ({}, {"fixed_kappa": 20.0}):
        model, guide = pair(**options)
        result = fit(model, guide, x, objective="meanfield", epochs=2, batch_size=8, progress=False)
        assert all(math.isfinite(m["train_loss"]) for m in result.metrics)


def test_fixed_kappa_makes_the_kl_a_constant():
    model, guide = pair(fixed_kappa=20.0)
    x = binary_data(8)
    q, p = guide.encode(x), model.prior(8)
    kl = torch.distributions.kl_divergence(q, p)
    assert torch.allclose(kl, kl[0].expand(8)) and kl[0] > 0
    assert not kl.requires_grad
