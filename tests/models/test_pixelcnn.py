"""The PixelCNN decoder: its masks are causal (by autograd), p(x | z) is a normalized
distribution over all images (summed exactly on tiny ones), z reaches every pixel, the
model draws, trains and improves, and `pyrovae fit` runs it with the ELBO and InfoVAE."""

import itertools
import json
import math

import pyro
import pytest
import torch

from pyrovae.nn.conv import GatedMaskedLayer, GatedStackLayer, MaskedConv2d, PixelCNN
from pyrovae.guides.conv import ConvGuide
from pyrovae.models.pixelcnn import PixelCNNVAE
from tests.cli.helpers import QUICK, pyrovae
from tests.contract import check_trains_and_improves

H, W = 4, 5
D = H * W


def input_gradients(net, i, z=None):
    """d out_i / d x at every pixel (abs), for a random input image."""
    x = torch.rand(1, D, requires_grad=True)
    out = net(x) if z is None else net(x, z)
    out.reshape(-1)[i].backward()
    return x.grad.abs().reshape(-1)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_one_masked_convolution_is_causal(mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(mask_type, 1, 3, 5, padding=2)
    net = lambda x: conv(x.reshape(-1, 1, H, W)).sum(1).reshape(-1, D)  # noqa: E731
    for i in range(D):
        grad = input_gradients(net, i)
        blocked = range(i, D) if mask_type == "A" else range(i + 1, D)
        assert (grad[list(blocked)] == 0).all(), (mask_type, i, grad)
        if mask_type == "B":
            assert grad[i] > 0  # B sees its own position (of the previous layer)
        r, c = divmod(i, W)
        if c > 0:
            assert grad[i - 1] > 0  # the left neighbour is seen


@pytest.mark.parametrize("stacks", [1, 2])
@pytest.mark.parametrize("conditioning", ["global", "spatial"])
@pytest.mark.parametrize("first_kernel_size, num_layers", [(3, 1), (5, 3), (7, 4)])
def test_the_whole_pixelcnn_is_causal(first_kernel_size, num_layers, conditioning, stacks):
    """Output i has zero gradient with respect to the input at every pixel >= i, through all
    layers (mask A first, then B; or the two stacks), and a nonzero one for the pixel just before it."""
    torch.manual_seed(0)
    net = PixelCNN((1, H, W), z_dim=2, num_layers=num_layers, channels=6, first_kernel=first_kernel_size,
                   conditioning=conditioning, stacks=stacks)
    z = torch.randn(1, 2)
    for i in range(D):
        grad = input_gradients(net, i, z)
        assert (grad[i:] == 0).all(), (i, grad)
        if i > 0:
            assert grad[i - 1] > 0 or i % W == 0
    assert net.receptive_rows == first_kernel_size // 2 + (num_layers - 1)


@pytest.mark.parametrize("stacks", [1, 2])
@pytest.mark.parametrize("conditioning", ["global", "spatial"])
@pytest.mark.parametrize("first_kernel_size, num_layers, kernel_size", [(3, 2, 3), (7, 1, 3), (5, 3, 3), (3, 2, 5)])
def test_the_receptive_field_is_as_many_rows_as_stated(first_kernel_size, num_layers, kernel_size, conditioning,
                                                      stacks):
    """By autograd, on a tall image: the outputs in the bottom row r depend on the input in row
    r - receptive_rows and on no row above it (VLAE's local decoder: 2 rows). (16 channels: with
    very few, the head's ReLUs can all be off at initialization and no gradient flows.)"""
    torch.manual_seed(0)
    rows, cols = 10, 5
    net = PixelCNN((1, rows, cols), z_dim=2, num_layers=num_layers, channels=16, first_kernel=first_kernel_size,
                   kernel=kernel_size, conditioning=conditioning, stacks=stacks)
    reach = net.receptive_rows
    assert reach == first_kernel_size // 2 + (num_layers - 1) * (kernel_size // 2)
    x = torch.rand(1, rows * cols, requires_grad=True)
    r = rows - 1
    net(x, torch.randn(1, 2))[0, r * cols:].sum().backward()
    grad = x.grad.abs().reshape(rows, cols)
    assert (grad[: r - reach] == 0).all(), grad
    assert (grad[r - reach] > 0).any(), grad


def test_a_residual_never_wraps_the_mask_a_layer():
    layer = GatedMaskedLayer("A", 4, 4, 3, z_dim=0)
    assert not layer.residual
    assert not GatedStackLayer(4, 4, 3, z_dim=0, first=True).residual and GatedStackLayer(4, 4, 3, z_dim=0).residual


def test_two_stacks_have_no_blind_spot():
    """The masked stack never sees the pixel two to the right in the row above, however deep (the
    blind spot); the two stacks see it from the second layer on, and every pixel of the rows
    above within reach: k_1 // 2 + (L - 1) k // 2 columns either way, and as many to the left."""
    torch.manual_seed(0)
    rows, cols = 6, 11
    r, c = 4, 5
    i = r * cols + c

    def seen(stacks, num_layers):
        net = PixelCNN((1, rows, cols), z_dim=0, num_layers=num_layers, channels=16, first_kernel=3, kernel=3,
                       stacks=stacks)
        x = torch.rand(1, rows * cols, requires_grad=True)
        net(x)[0, i].backward()
        return x.grad.abs().reshape(rows, cols) > 0

    for num_layers in (2, 3):
        assert not seen(1, num_layers)[r - 1, c + 2]
        grid = seen(2, num_layers)
        reach = 1 + (num_layers - 1)
        assert grid[r - 1, c - reach:c + reach + 1].all() and grid[r, c - reach:c].all(), grid
        assert not grid[r, c:].any() and not grid[r + 1:].any()
        assert not grid[r - 1, c + reach + 1:].any()
    with pytest.raises(ValueError, match="stacks"):
        PixelCNN((1, 4, 4), z_dim=0, stacks=3)


@pytest.mark.parametrize("conditioning", ["global", "spatial"])
def test_z_reaches_every_pixel(conditioning):
    torch.manual_seed(0)
    net = PixelCNN((1, H, W), z_dim=3, num_layers=2, channels=4, conditioning=conditioning)
    z = torch.randn(1, 3, requires_grad=True)
    out = net(torch.rand(1, D), z)
    for i in range(D):
        (g,) = torch.autograd.grad(out[0, i], z, retain_graph=True)
        assert g.abs().sum() > 0


@pytest.mark.parametrize("likelihood, conditioning", [("bernoulli", "global"), ("bernoulli", "spatial"),
                                                      ("logistic-mixture", "global")])
def test_p_x_given_z_sums_to_one_over_all_images(likelihood, conditioning):
    """The autoregressive product is a distribution: over all 2^9 binary 3x3 images (or all
    3^4 images of 3 grey levels, 2x2), exp log p(x | z) sums to one, for several z."""
    torch.manual_seed(0)
    if likelihood == "bernoulli":
        shape, levels = (3, 3), (0.0, 1.0)
        model = PixelCNNVAE(x_dim=9, z_dim=2, image_shape=shape, num_layers=3, pixel_channels=6, first_kernel_size=3,
                            conditioning=conditioning)
    else:
        shape, levels = (2, 2), (0.0, 0.5, 1.0)
        model = PixelCNNVAE(x_dim=4, z_dim=2, image_shape=shape, num_layers=2, pixel_channels=6, first_kernel_size=3,
                            likelihood="logistic-mixture", num_bins=3, num_mixtures=2)
    images = torch.tensor(list(itertools.product(levels, repeat=math.prod(shape))))
    for z in torch.randn(3, 2):
        px = model.likelihood(z.expand(len(images), 2), images)
        total = px.log_prob(model.observed(images)).exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_draws_are_images_the_model_scores():
    torch.manual_seed(0)
    model = PixelCNNVAE(x_dim=D, z_dim=2, image_shape=(H, W), num_layers=2, pixel_channels=4)
    x = model(num_samples=6)
    assert x.shape == (6, D) and set(x.unique().tolist()) <= {0.0, 1.0}
    model = PixelCNNVAE(x_dim=D, z_dim=2, image_shape=(H, W), num_layers=2, pixel_channels=4,
                        likelihood="logistic-mixture")
    x = model.sample(3)
    assert x.shape == (3, D) and (x >= 0).all() and (x <= 1).all() and torch.equal((x * 255).round(), x * 255)


def test_particles_broadcast():
    """A leading particle dimension on z (the IWAE bound) against data without it."""
    model = PixelCNNVAE(x_dim=D, z_dim=2, image_shape=(H, W), num_layers=2, pixel_channels=4)
    x = torch.bernoulli(torch.full((5, D), 0.3))
    px = model.likelihood(torch.randn(7, 5, 2), x)
    assert px.batch_shape == (7, 5) and px.log_prob(x).shape == (7, 5)


def test_options_are_checked():
    with pytest.raises(ValueError, match="odd"):
        PixelCNNVAE(x_dim=16, first_kernel_size=4)
    with pytest.raises(ValueError, match="likelihood"):
        PixelCNNVAE(x_dim=16, likelihood="gaussian")
    with pytest.raises(ValueError, match="one channel"):
        PixelCNNVAE(x_dim=48, image_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="image_shape"):
        PixelCNNVAE(x_dim=16, image_shape=(3, 5))
    with pytest.raises(ValueError, match="conditioning"):
        PixelCNNVAE(x_dim=16, conditioning="local")


def test_spatial_conditioning_lets_z_say_where():
    """With a global z, z shifts the first layer's pre-activations by the same amount at every
    pixel; with a spatial z the shift differs from pixel to pixel."""
    torch.manual_seed(0)
    z1, z2 = torch.zeros(1, 3), torch.randn(1, 3)
    for conditioning, varies in (("global", False), ("spatial", True)):
        net = PixelCNN((1, H, W), z_dim=3, num_layers=1, channels=4, conditioning=conditioning)
        layer = net.layers[0]

        def term(z):
            if net.z_map is None:
                return layer.cond(z)[:, :, None, None].expand(1, -1, H, W)
            return layer.cond(net.z_map(z).reshape(1, -1, H, W))

        shift = term(z2) - term(z1)
        spread = (shift - shift.mean((-2, -1), keepdim=True)).abs().max().item()
        assert (spread > 1e-4) == varies, (conditioning, spread)


@pytest.mark.parametrize("objective", ["elbo", "infovae"])
def test_trains_and_improves(objective):
    pyro.set_rng_seed(0)
    model = PixelCNNVAE(x_dim=12, z_dim=2, num_layers=2, pixel_channels=8, first_kernel_size=3)
    guide = ConvGuide(x_dim=12, z_dim=2, channels=(4,), hidden_dims=(16,))
    check_trains_and_improves(model, guide, objective)


def test_cli_fit_and_evaluate(tmp_path):
    """`pyrovae fit --model pixelcnn-vae --guide conv` on the digits (8x8, binarized), with the
    InfoVAE objective, then `pyrovae evaluate` of the run, in fresh processes."""
    done = fitted = pyrovae("fit", "--model", "pixelcnn-vae", "--guide", "conv", "--objective", "infovae", *QUICK,
                   "--num-layers", "2", "--pixel-channels", "8", "--channels", "8", "--first-kernel-size", "3",
                   "--conditioning", "spatial",
                   "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["name"] == "pixelcnn-vae" and saved["model"]["options"]["num_layers"] == 2
    assert saved["model"]["options"]["conditioning"] == "spatial"
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("active_units" in m for m in metrics)
    done = pyrovae("evaluate", tmp_path / "run", "--num-samples", "5", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert math.isfinite(json.loads(done.stdout)["log_likelihood"])
    assert not (tmp_path / "run" / "samples.png").exists() and "pyrovae sample" in fitted.stdout  # slow: on demand
    done = pyrovae("sample", tmp_path / "run", "--n", "4", cwd=tmp_path)  # drawn pixel by pixel
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "samples-4-seed0.png").is_file()


def test_samples_follow_the_autoregressive_distribution():
    """`model.sample` draws pixel after pixel from prod_i p(x_i | x_<i, z): for a fixed z, the
    frequencies of all 2^4 binary 2x2 images in 20000 draws match exp log p(x | z) (5 standard
    errors), and the draws are binary images, not the decoder's mean."""
    torch.manual_seed(0)
    model = PixelCNNVAE(x_dim=4, z_dim=2, image_shape=(2, 2), num_layers=2, pixel_channels=6, first_kernel_size=3)
    images = torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)))
    z = torch.randn(2)
    exact = model.likelihood(z.expand(len(images), 2), images).log_prob(images).exp()
    n = 20000
    draws = model.generate(z.expand(n, 2))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    codes = (draws * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()  # the index in `images`
    freq = torch.bincount(codes, minlength=16).float() / n
    tolerance = 5 * (exact * (1 - exact) / n).sqrt() + 1e-3
    assert ((freq - exact).abs() <= tolerance).all(), (freq, exact)
    assert exact.max() < 0.9  # a distribution spread over several images: the test can fail


def test_sample_reads_no_data_and_the_contract_catches_means():
    """prior_samples calls the model's own sampler; a sampler that returned the decoder's
    mean fed with zeros (what `pyrovae sample` drew before) fails the contract check."""
    from pyrovae.evaluation.sampling import DRAW_TITLE, prior_samples
    from tests.contract import check_samples

    model = PixelCNNVAE(x_dim=12, z_dim=2, num_layers=2, pixel_channels=4, first_kernel_size=3, image_shape=(3, 4))
    x, title = prior_samples(model, 5)
    assert title == DRAW_TITLE and set(x.unique().tolist()) <= {0.0, 1.0}
    check_samples(model, {"x": torch.zeros(2, 12)})
    model.sample = lambda num_samples: model.likelihood(model.prior(num_samples).sample(),
                                                        torch.zeros(num_samples, 12)).mean
    with pytest.raises(AssertionError, match="outside the support|likelihood's mean"):
        check_samples(model, {"x": torch.zeros(2, 12)})


def reference_decoder(net, x, z):
    """The decoder's forward as first written, before the step was made faster (issue 22): the
    masked convolutions with their whole kernels, the 1x1 convolutions as ``nn.Conv2d``, the
    stacks' outputs sliced, every addition a new tensor."""
    fn = torch.nn.functional
    h = x.reshape(-1, *net.image_shape) * net.input_scale
    c = z if net.z_map is None else net.z_map(z).reshape(h.shape[0], -1, *net.image_shape[1:])

    def cond(layer):
        if layer.cond is None or c is None:
            return torch.zeros(())
        return layer.cond(c) if layer.spatial else layer.cond(c)[:, :, None, None]

    def gate(a):
        f, g = a.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    if net.stacks == 1:
        for layer in net.layers:
            conv = layer.conv
            a = fn.conv2d(h, conv.weight * conv.mask, conv.bias, padding=conv.padding) + cond(layer)
            out = layer.out(gate(a))
            h = h + out if layer.residual else out
    else:
        v = h
        for layer in net.layers:
            k = layer.k
            a_v = layer.v_conv(fn.pad(v, (k, k, k, 0)))[..., : v.shape[-2], :]
            a_h = layer.h_conv(fn.pad(h, (k, 0, 0, 0)))[..., : h.shape[-1]] + layer.v_to_h(a_v)
            cond_v, cond_h = (cond(layer), cond(layer)) if layer.cond is None or c is None else cond(layer).chunk(2, 1)
            out = layer.out(gate(a_h + cond_h))
            v, h = gate(a_v + cond_v), (h + out if layer.residual else out)
    return net.head(h).reshape(x.shape[0], -1)


@pytest.mark.parametrize("stacks", [1, 2])
@pytest.mark.parametrize("conditioning, z_dim", [("global", 3), ("spatial", 3), ("global", 0)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_decoder_computes_what_it_first_did(stacks, conditioning, z_dim, dtype):
    """The faster forward (the masked kernels' rows below the centre left out, 1x1 convolutions as
    batched matrix products, additions in place) gives the first forward's outputs and gradients
    (parameters and input): to 1e-12 in float64, to float rounding in float32."""
    torch.manual_seed(0)
    net = PixelCNN((1, 6, 7), z_dim=z_dim, num_layers=3, channels=8, first_kernel=5, kernel=3,
                   out_channels=3, conditioning=conditioning, stacks=stacks).to(dtype)
    x = torch.rand(4, 42, dtype=dtype, requires_grad=True)
    z = torch.randn(4, z_dim, dtype=dtype) if z_dim else None
    params = [x] + list(net.parameters())
    results = []
    for forward in (lambda: net(x, z).reshape(4, -1), lambda: reference_decoder(net, x, z)):
        out = forward()
        weights = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        results.append((out, torch.autograd.grad((out * weights).sum(), params)))
    (out, grads), (ref_out, ref_grads) = results
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out, ref_out, **tol)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, **tol)


def test_the_parameters_are_named_and_shaped_as_before():
    """Old checkpoints load: the modules, their names and shapes are the first version's."""
    one = PixelCNN((1, 4, 4), z_dim=2, num_layers=2, channels=4, first_kernel=3)
    two = PixelCNN((1, 4, 4), z_dim=2, num_layers=2, channels=4, first_kernel=3, stacks=2)
    assert {k: tuple(v.shape) for k, v in one.state_dict().items()} == {
        "layers.0.conv.weight": (8, 1, 3, 3), "layers.0.conv.bias": (8,), "layers.0.conv.mask": (8, 1, 3, 3),
        "layers.0.cond.weight": (8, 2), "layers.0.out.weight": (4, 4, 1, 1), "layers.0.out.bias": (4,),
        "layers.1.conv.weight": (8, 4, 3, 3), "layers.1.conv.bias": (8,), "layers.1.conv.mask": (8, 4, 3, 3),
        "layers.1.cond.weight": (8, 2), "layers.1.out.weight": (4, 4, 1, 1), "layers.1.out.bias": (4,),
        "head.1.weight": (4, 4, 1, 1), "head.1.bias": (4,), "head.3.weight": (1, 4, 1, 1), "head.3.bias": (1,)}
    assert {k: tuple(v.shape) for k, v in two.state_dict().items()} == {
        "layers.0.v_conv.weight": (8, 1, 1, 3), "layers.0.v_conv.bias": (8,),
        "layers.0.h_conv.weight": (8, 1, 1, 1), "layers.0.h_conv.bias": (8,),
        "layers.0.v_to_h.weight": (8, 8, 1, 1), "layers.0.v_to_h.bias": (8,), "layers.0.cond.weight": (16, 2),
        "layers.0.out.weight": (4, 4, 1, 1), "layers.0.out.bias": (4,),
        "layers.1.v_conv.weight": (8, 4, 2, 3), "layers.1.v_conv.bias": (8,),
        "layers.1.h_conv.weight": (8, 4, 1, 2), "layers.1.h_conv.bias": (8,),
        "layers.1.v_to_h.weight": (8, 8, 1, 1), "layers.1.v_to_h.bias": (8,), "layers.1.cond.weight": (16, 2),
        "layers.1.out.weight": (4, 4, 1, 1), "layers.1.out.bias": (4,),
        "head.1.weight": (4, 4, 1, 1), "head.1.bias": (4,), "head.3.weight": (1, 4, 1, 1), "head.3.bias": (1,)}
