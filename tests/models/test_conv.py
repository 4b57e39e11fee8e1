"""The convolutional encoder and decoder: shapes through particle dimensions, the image shape
read from x_dim or given, the conv VAE's two likelihoods (its logistic mixture is the sum of
per-pixel discretized logistics over grey levels; off-grid data is refused in one line), and
`pyrovae fit` of conv-vae + conv on 8-bit grey levels."""

import json
import math

import pyro
import pytest
import torch

from pyrovae.nn.conv import ConvDecoder, ConvEncoder, image_shape_for
from pyrovae.distributions.discretized_logistic import DiscretizedLogisticMixture
from pyrovae.guides.conv import ConvGuide
from pyrovae.models.conv import ConvVAE
from tests.cli.helpers import QUICK, pyrovae
from tests.contract import check_trains_and_improves


def test_image_shape_from_x_dim_or_given():
    assert image_shape_for(784) == (1, 28, 28) and image_shape_for(12) == (1, 1, 12)
    assert image_shape_for(12, (3, 4)) == (1, 3, 4) and image_shape_for(48, (3, 4, 4)) == (3, 4, 4)
    with pytest.raises(ValueError, match="x_dim is 12"):
        image_shape_for(12, (5, 5))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 1, 12), (3, 5, 7)])
def test_encoder_and_decoder_shapes_with_particles(shape):
    d = math.prod(shape)
    enc = ConvEncoder(shape, 6, channels=(4, 8), hidden_dims=(16,))
    assert enc(torch.zeros(2, 3, d)).shape == (2, 3, 6)
    dec = ConvDecoder(5, shape, channels=(8, 4), hidden_dims=(16,))
    assert dec(torch.zeros(2, 3, 5)).shape == (2, 3, d)
    dec = ConvDecoder(5, shape, channels=(8, 4), out_channels=7)
    assert dec(torch.zeros(4, 5)).shape == (4, 7, d)


def test_the_encoder_sees_the_image_as_an_image():
    """A convolution is local: the gradient of one output feature map pixel at the top-left
    corner touches only the corner's neighbourhood of the input."""
    enc = ConvEncoder((1, 8, 8), 2, channels=(3,), hidden_dims=())
    x = torch.rand(1, 64, requires_grad=True)
    enc.convs[0](x.reshape(1, 1, 8, 8))[0, 0, 0, 0].backward()  # before the activation
    grad = x.grad.reshape(8, 8)
    assert grad[:2, :2].abs().sum() > 0 and grad[2:].abs().sum() == 0 and grad[:, 2:].abs().sum() == 0


def test_logistic_likelihood_is_the_sum_over_pixels():
    torch.manual_seed(0)
    model = ConvVAE(x_dim=64, z_dim=2, channels=(4, 8), hidden_dims=(8,), likelihood="logistic-mixture",
                    num_mixtures=3)
    x = torch.randint(0, 256, (5, 64)).float() / 255
    z = torch.randn(5, 2)
    params = model.decoder(z)  # (5, 9, 64)
    logits, locs, log_scales = params.movedim(-2, -1).split(3, -1)
    per_pixel = DiscretizedLogisticMixture(logits, torch.tanh(locs), log_scales).log_prob((x * 255).round())
    got = model.likelihood(z).log_prob(model.observed(x))
    assert torch.allclose(got, per_pixel.sum(-1), atol=1e-4)


def test_logistic_likelihood_refuses_data_off_the_grey_level_grid():
    model = ConvVAE(x_dim=64, z_dim=2, likelihood="logistic-mixture")
    with pytest.raises(ValueError, match="--binarize none"):
        pyro.poutine.trace(model).get_trace(torch.full((2, 64), 0.3333))


def test_the_grid_is_checked_on_the_first_batch_only(monkeypatch):
    # the check reads the data on the host: every step doing it kept the model out of a CUDA graph
    import pyrovae.models.conv as conv

    checks = []
    original = conv.grey_levels
    monkeypatch.setattr(conv, "grey_levels", lambda x, n, check=True: checks.append(check) or original(x, n, check))
    model = ConvVAE(x_dim=64, z_dim=2, likelihood="logistic-mixture")
    for _ in range(3):
        pyro.poutine.trace(model).get_trace(torch.randint(0, 256, (2, 64)) / 255.0)
    assert checks == [True, False, False]


def test_figures_draw_grey_levels_in_the_unit_interval():
    from pyrovae.evaluation.plots import grey_scale

    model = ConvVAE(x_dim=64, z_dim=2, likelihood="logistic-mixture")
    site = pyro.poutine.trace(model).get_trace(torch.randint(0, 256, (2, 64)) / 255.0).nodes["x"]
    assert grey_scale(site["fn"]) == 255.0
    bernoulli = pyro.poutine.trace(ConvVAE(x_dim=64, z_dim=2)).get_trace(torch.zeros(2, 64)).nodes["x"]
    assert grey_scale(bernoulli["fn"]) == 1.0


def test_options_are_checked():
    with pytest.raises(ValueError, match="likelihood"):
        ConvVAE(x_dim=64, likelihood="gaussian")
    with pytest.raises(ValueError, match="channels"):
        ConvGuide(x_dim=64, channels=(0,))
    with pytest.raises(ValueError, match="image_shape"):
        ConvGuide(x_dim=64, image_shape=(4, 4))


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic-mixture"])
def test_trains_and_improves(likelihood):
    pyro.set_rng_seed(0)
    model = ConvVAE(x_dim=12, z_dim=2, channels=(4,), hidden_dims=(16,), likelihood=likelihood)
    guide = ConvGuide(x_dim=12, z_dim=2, channels=(4,), hidden_dims=(16,))
    check_trains_and_improves(model, guide, "elbo")


def test_cli_fit_on_grey_levels_and_evaluate(tmp_path):
    """conv-vae + conv with the logistic mixture on the digits' 17 grey levels (0..16, read
    unbinarized), then `pyrovae evaluate`."""
    done = pyrovae("fit", "--model", "conv-vae", "--guide", "conv", *QUICK, "--binarize", "none",
                   "--likelihood", "logistic-mixture", "--num-bins", "17", "--channels", "4", "8",
                   "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["num_bins"] == 17 and saved["guide"]["options"]["channels"] == [4, 8]
    done = pyrovae("evaluate", tmp_path / "run", "--num-samples", "5", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ll = json.loads(done.stdout)["log_likelihood"]
    assert math.isfinite(ll) and -64 * math.log(17) * 3 < ll < 0  # nats over 64 discrete pixels
