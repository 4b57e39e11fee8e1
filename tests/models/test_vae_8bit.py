"""The VAE's ``logistic-mixture`` likelihood, the default for a user's 8-bit images: a
probability over the grey levels (it sums to one over every image), draws and means on the
data's [0, 1] grid, Burda's initialisation at the data's mean, and the contract."""

import itertools

import pytest
import torch

from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.models import VAE
from tests.contract import check_contract


def model_of(x_dim=2, num_bins=3, num_mixtures=2):
    torch.manual_seed(0)
    return VAE(x_dim=x_dim, z_dim=2, hidden_dims=(8,), likelihood="logistic-mixture", num_bins=num_bins,
               num_mixtures=num_mixtures)


def test_p_x_given_z_sums_to_one_over_all_images():
    """All 3^2 images of 3 grey levels: exp log p(x | z) sums to one for several z, and the
    model scores x in [0, 1] as the grey levels x (B - 1)."""
    model = model_of()
    images = torch.tensor(list(itertools.product((0.0, 0.5, 1.0), repeat=2)))
    for z in torch.randn(3, 2):
        px = model.likelihood(z.expand(len(images), 2))
        assert px.log_prob(model.observed(images)).exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(model.observed(images), images * 2)


def test_draws_and_means_are_on_the_data_scale():
    model = model_of(x_dim=5, num_bins=256)
    draws = model(num_samples=40)
    assert draws.shape == (40, 5) and (draws >= 0).all() and (draws <= 1).all()
    assert torch.equal((draws * 255).round(), draws * 255)  # on the grid k / 255
    means = model.sample(6)
    assert means.shape == (6, 5) and (means >= 0).all() and (means <= 1).all()
    assert not torch.equal((means * 255).round(), means * 255)  # a mean, between the levels


def test_grey_levels_off_the_8_bit_grid_are_refused():
    with pytest.raises(ValueError, match="grey levels k / 255"):
        model_of(num_bins=256)(torch.full((2, 2), 0.3))


def test_burda_init_puts_each_pixel_at_the_data_mean():
    """With the last layer's weights at zero, every component's location (tanh of the
    decoder's output, on [-1, 1]) is 2 * mean - 1 of that pixel's data."""
    model = model_of(x_dim=3, num_mixtures=2)
    x = torch.tensor([[0.0, 0.5, 1.0], [0.5, 0.5, 1.0]])
    model.init_from_data(x)
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
    locs = model.likelihood(torch.zeros(1, 2)).base_dist.locs  # (1, x_dim, K)
    expected = (2 * x.mean(0) - 1).clamp(-0.99, 0.99)
    torch.testing.assert_close(locs[0], expected[:, None].expand(3, 2))


def test_the_contract_on_grey_levels():
    model = model_of(x_dim=12, num_bins=256)
    guide = DiagNormalGuide(x_dim=12, z_dim=2, hidden_dims=(8,))
    x = torch.randint(0, 256, (8, 12)).float() / 255
    check_contract(model, guide, {"x": x})
