"""The denoising guide: corruption in training mode only, with the right statistics; clean
inputs (the base guide exactly) in eval mode; gradients; any base guide; training."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovae import log_likelihood
from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.guides import DenoisingGuide, DiagNormalGuide
from pyrovae.guides.denoising import corrupt
from pyrovae.models import VAE
from pyrovae.infer.objectives import make_objective

from tests.contract import binary_data, check_trains_and_improves


def test_salt_and_pepper_statistics():
    torch.manual_seed(0)
    x = torch.full((400, 100), 0.5)  # neither salt nor pepper: every change is visible
    noisy = corrupt(x, "salt_and_pepper", 0.3)
    changed = noisy != 0.5
    n = x.numel()
    assert abs(float(changed.float().mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    salt = float((noisy[changed] == 1).float().mean())
    assert abs(salt - 0.5) < 4 * math.sqrt(0.25 / int(changed.sum()))
    assert set(noisy[changed].unique().tolist()) == {0.0, 1.0}


def test_im_et_al_salt_and_pepper_statistics():
    """Their code's corruption: a pixel replaced with probability p by a draw of Bernoulli(p):
    salt with probability p^2, pepper p (1 - p)."""
    torch.manual_seed(0)
    x = torch.full((400, 100), 0.5)
    noisy = corrupt(x, "salt_and_pepper_im", 0.3)
    n = x.numel()
    for value, p in ((1.0, 0.09), (0.0, 0.21), (0.5, 0.7)):
        assert abs(float((noisy == value).float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="noise_level must be >= 0"):
        DenoisingGuide(12, 3, (16,), noise="salt_and_pepper_im", noise_level=1.5)


def test_gaussian_statistics():
    torch.manual_seed(0)
    x = binary_data(400, 100)
    noise = corrupt(x, "gaussian", 0.2) - x
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * 0.2 / math.sqrt(n)
    assert float(noise.std()) == pytest.approx(0.2, rel=4 * math.sqrt(2 / n))


def test_corruption_in_training_mode_only():
    torch.manual_seed(0)
    guide = DenoisingGuide(12, 3, (16,), noise="salt_and_pepper", noise_level=0.5)
    x = binary_data(64)
    assert guide.training
    assert not torch.equal(guide.corrupt(x), x)
    guide.eval()
    assert guide.corrupt(x) is x
    q, q_base = guide.encode(x), guide.base.encode(x)
    assert torch.equal(q.base_dist.loc, q_base.base_dist.loc)
    guide.train()
    with eval_mode(guide):  # what log_likelihood and the validation ELBO use
        assert guide.corrupt(x) is x
    assert guide.training and not torch.equal(guide.corrupt(x), x)


def test_training_mode_encodes_the_corrupted_input_and_gradients_flow():
    torch.manual_seed(0)
    guide = DenoisingGuide(12, 3, (16,), noise="gaussian", noise_level=0.5)
    model = VAE(12, 3, (16,))
    x = binary_data(16)
    pyro.set_rng_seed(1)
    trace = poutine.trace(guide).get_trace(x)
    pyro.set_rng_seed(1)
    x_tilde = corrupt(x, "gaussian", 0.5)
    expected = guide.base.encode(x_tilde).base_dist.loc
    assert torch.allclose(trace.nodes["z"]["fn"].base_dist.loc, expected)
    assert not torch.allclose(expected, guide.base.encode(x).base_dist.loc)
    make_objective("elbo")(model, guide, {"x": x}, 0).backward()
    for name, p in guide.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_log_likelihood_is_the_base_guides():
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), DenoisingGuide(12, 3, (16,), noise_level=0.4)
    x = binary_data()
    pyro.set_rng_seed(5)
    ours = log_likelihood(model, guide, x, num_samples=5)
    pyro.set_rng_seed(5)
    base = log_likelihood(model, guide.base, x, num_samples=5)
    assert torch.equal(ours.per_datapoint, base.per_datapoint)


def test_any_base_guide_and_bad_options():
    guide = DenoisingGuide(12, 3, (16,), base="mixture")
    assert type(guide.base).__name__ == "MixtureGuide"
    assert DenoisingGuide(12, 3, (16,), base="vmf").model_name == "svae"
    assert isinstance(DenoisingGuide(12, 3, (16,)).base, DiagNormalGuide)
    with pytest.raises(ValueError, match="unknown noise"):
        DenoisingGuide(12, 3, noise="dropout")
    with pytest.raises(ValueError, match="noise_level"):
        DenoisingGuide(12, 3, noise="salt_and_pepper", noise_level=1.5)
    with pytest.raises(ValueError, match="unknown guide"):
        DenoisingGuide(12, 3, base="nope")


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_and_evaluates(objective):
    torch.manual_seed(0)
    model, guide = VAE(12, 3, (16,)), DenoisingGuide(12, 3, (16,), noise_level=0.1)
    check_trains_and_improves(model, guide, objective)
    assert guide.training  # fit's validation pass leaves the mode as it was