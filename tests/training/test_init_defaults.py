"""The data-mean output start for every model whose likelihood it applies to: the decoder's
output at init is the data's mean (its logits, the keys' frequencies over the real steps, the
logistics' locations), ``fit`` picks it by default, ``init="torch"`` still leaves torch's
layers; and ``fit()`` from Python starts a run as ``pyrovae fit`` does."""

import json

import pyro
import pytest
import torch

from pyrovae import fit
from pyrovae.guides import DiagNormalGuide
from pyrovae.guides.conv import ConvGuide
from pyrovae.models import (DMM, HMMVAE, VRNN, BernoulliRNN, ConvVAE, LinearGaussianVAE, PixelCNNVAE, RobustVAE,
                            VarianceVAE)
from pyrovae.models.vrnn import example_sequences
from pyrovae.nn import default_init, initialize_
from pyrovae.registry import get_guide
from tests.cli.helpers import QUICK

G = torch.Generator().manual_seed(0)
IMAGES = torch.bernoulli(torch.rand(64, 16, generator=G).mul(0.6), generator=G)  # 4 x 4 binary images
GREY = torch.randint(0, 256, (64, 16), generator=G).float() / 255  # 8-bit grey levels
REALS = torch.randn(64, 6, generator=G) * 2 + torch.arange(6.0)


def logits(p):
    p = p.double().clamp(1e-3, 1 - 1e-3)
    return (p.log() - (-p).log1p()).float()


def sequences():
    """Binary sequences with padding set to 1: the padding must not count."""
    batch = example_sequences(5, n=32, num_steps=6, seed=3)
    x = torch.where(batch["mask"][..., None], batch["x"], torch.ones_like(batch["x"]))
    return {**batch, "x": x}, batch["x"][batch["mask"]].mean(0)


@pytest.mark.parametrize("name, model, head", [
    ("vrnn", VRNN(x_dim=5, z_dim=2, rnn_dim=8, feature_dim=4, hidden_dims=(8,)), lambda m: m.decoder[-1]),
    ("bernoulli-rnn", BernoulliRNN(x_dim=5, rnn_dim=8, feature_dim=4, hidden_dims=(8,)), lambda m: m.decoder[-1]),
    ("dmm", DMM(x_dim=5, z_dim=2, transition_dim=8, emission_dim=8), lambda m: m.emitter[-1]),
    ("hmm-vae", HMMVAE(x_dim=5, num_units=3, z_dim=2, hidden_dims=(8,)), lambda m: m.decoder[-1]),
])
def test_sequence_models_start_at_the_real_steps_key_frequencies(name, model, head):
    batch, frequencies = sequences()
    assert default_init(model) == ("data" if name == "dmm" else "burda")  # the DMM keeps torch's layers
    initialize_(model, None, batch, default_init(model))
    assert head(model).bias.tolist() == pytest.approx(logits(frequencies).tolist(), abs=1e-5)
    with torch.no_grad():  # with the last layer's weights at zero the output is the keys' frequencies
        head(model).weight.zero_()
        x = batch["x"][:3]
        if isinstance(model, VRNN):
            px = model.emission(torch.zeros(3, 4), torch.zeros(3, 8))
        elif isinstance(model, BernoulliRNN):
            px = model.likelihood(x, batch["mask"][:3]).base_dist.base_dist
        else:
            px = model.emission(torch.zeros(3, 2))
    assert px.mean.reshape(-1, 5) == pytest.approx(frequencies.clamp(1e-3, 1 - 1e-3).expand(len(px.mean.reshape(-1, 5)), 5), abs=1e-5)


def test_the_dmm_keeps_its_identity_transition_under_glorot():
    model = DMM(x_dim=5, z_dim=3, transition_dim=8, emission_dim=8)
    initialize_(model, None, sequences()[0], "glorot")
    assert not torch.equal(model.transition.linear.weight, torch.eye(3))
    initialize_(model, None, sequences()[0], "burda")
    assert torch.equal(model.transition.linear.weight, torch.eye(3)) and not model.transition.linear.bias.any()


def test_fit_starts_the_dmm_from_torchs_layers_with_the_keys_bias_by_default(tmp_path):
    """The DMM's default is ``data``: every parameter as torch built it but the emission's output
    bias, which starts at the real steps' key frequencies (docs/sequences.md)."""
    batch, frequencies = sequences()

    def build():
        pyro.set_rng_seed(0)
        return DMM(x_dim=5, z_dim=3, transition_dim=8, emission_dim=8), get_guide("dmm")(x_dim=5, z_dim=3, rnn_dim=8)

    model, guide = build()
    built = {k: v.detach().clone() for k, v in (*model.state_dict().items(), *guide.state_dict().items())}
    fit(model, guide, batch, epochs=1, batch_size=32, lr=1e-12, progress=False, figures=False, out_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "data"
    now = {**model.state_dict(), **guide.state_dict()}
    moved = [k for k in built if not torch.allclose(built[k], now[k], atol=1e-9)]
    assert moved == ["emitter.%d.bias" % (len(model.emitter) - 1)]
    assert torch.sigmoid(model.emitter[-1].bias).tolist() == pytest.approx(
        frequencies.clamp(1e-3, 1 - 1e-3).tolist(), abs=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic-mixture"])
@pytest.mark.parametrize("kind", ["conv-vae", "pixelcnn-vae"])
def test_conv_decoders_start_at_the_mean_pixel(kind, likelihood):
    x = IMAGES if likelihood == "bernoulli" else GREY
    if kind == "conv-vae":
        model = ConvVAE(x_dim=16, z_dim=2, channels=(4, 8), hidden_dims=(8,), likelihood=likelihood, num_mixtures=2)
        last = model.decoder.deconvs[-1]
    else:
        model = PixelCNNVAE(x_dim=16, z_dim=2, num_layers=2, pixel_channels=4, likelihood=likelihood, num_mixtures=2)
        last = model.decoder.head[-1]
    assert default_init(model) == "burda"
    initialize_(model, ConvGuide(x_dim=16, z_dim=2, channels=(4,), hidden_dims=(8,)), {"x": x}, "burda")
    with torch.no_grad():
        last.weight.zero_()  # the output is the bias alone: the mean pixel at every pixel
        z = torch.randn(3, 2)
        px = (model.likelihood(z) if kind == "conv-vae" else model.likelihood(z, x[:3])).base_dist
    mean = float(x.mean())
    if likelihood == "bernoulli":
        assert px.mean.flatten().tolist() == pytest.approx([mean] * 48, abs=1e-5)
    else:  # every component's location at the mean grey level, on the logistics' [-1, 1] scale
        assert px.locs.flatten().tolist() == pytest.approx([2 * mean - 1] * 96, abs=1e-5)


@pytest.mark.parametrize("model, head", [
    (RobustVAE(x_dim=6, z_dim=2), lambda m: m.decoder[-1].bias),
    (RobustVAE(x_dim=6, z_dim=2, hidden_dims=(8,)), lambda m: m.decoder[-1].bias),
    (LinearGaussianVAE(x_dim=6, z_dim=2), lambda m: m.bias),
    (LinearGaussianVAE(x_dim=6, z_dim=2, noise="diagonal"), lambda m: m.bias),
])
def test_gaussian_means_start_at_the_data_mean(model, head):
    # the robust VAE with an MLP decoder can start there but measured better from torch's layers
    mlp = isinstance(model, RobustVAE) and model.options.hidden_dims
    assert default_init(model) == ("torch" if mlp else "burda")
    initialize_(model, None, {"x": REALS}, "burda")
    assert head(model).tolist() == pytest.approx(REALS.mean(0).tolist(), abs=1e-5)


def test_the_variance_vae_starts_from_torchs_layers_and_burda_sets_an_ordinary_last_layer():
    model = VarianceVAE(x_dim=16, z_dim=2, hidden_dims=(8, 8))
    assert default_init(model) == "torch"  # measured better past the first epoch (hidden-talents.md)
    initialize_(model, None, {"x": IMAGES}, "burda")
    assert model.decoder[-1].bias.tolist() == pytest.approx(logits(IMAGES.mean(0)).tolist(), abs=1e-5)
    last = VarianceVAE(x_dim=16, z_dim=2, hidden_dims=(8, 8), variance_layers=(2,))
    assert default_init(last) == "torch"
    with pytest.raises(ValueError, match="its last layer is a variance layer"):
        last.init_from_data(x=IMAGES)


@pytest.mark.parametrize("build, data", [
    (lambda: (ConvVAE(x_dim=16, z_dim=2, channels=(4, 8), hidden_dims=(8,)),
              ConvGuide(x_dim=16, z_dim=2, channels=(4,), hidden_dims=(8,))), lambda: IMAGES),
    (lambda: (VRNN(x_dim=5, z_dim=2, rnn_dim=8, feature_dim=4, hidden_dims=(8,)),
              get_guide("vrnn")(x_dim=5, z_dim=2, rnn_dim=8, feature_dim=4, hidden_dims=(8,))), lambda: sequences()[0]),
    (lambda: (RobustVAE(x_dim=6, z_dim=2), get_guide("robust-encoder")(x_dim=6, z_dim=2, hidden_dims=(8,))),
     lambda: REALS),
])
def test_fit_starts_from_the_data_by_default_and_init_torch_leaves_torchs_layers(build, data, tmp_path):
    def start(**kwargs):  # lr 1e-12: the weights stay where the run started
        pyro.set_rng_seed(0)
        model, guide = build()
        built = {k: v.detach().clone() for k, v in model.state_dict().items()}
        fit(model, guide, data(), epochs=1, batch_size=16, lr=1e-12, progress=False, figures=False, **kwargs)
        return built, model.state_dict()

    built, trained = start(out_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "burda"
    assert any(not torch.allclose(built[k], trained[k]) for k in built)
    built, trained = start(init="torch")
    assert all(torch.allclose(built[k], trained[k], atol=1e-9) for k in built)


def test_fit_from_python_starts_a_run_as_the_cli_does(tmp_path):
    """The same pair, data and seed: ``fit()`` with no options and ``pyrovae fit`` with no flags
    record the same init, objective, batch size, learning rate and seed (the epochs differ by
    design: the CLI's default is about 3000 steps, fit's 10)."""
    from pyrovae.data.datasets import load_dataset
    from pyrovae.models import VAE

    from pyrovae.cli import main

    assert main(["fit", "--model", "vae", *QUICK, "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "run.json").read_text())
    dataset = load_dataset("digits")
    pyro.set_rng_seed(0)
    model = VAE(x_dim=dataset.x_dim, z_dim=2, hidden_dims=(16,))
    guide = DiagNormalGuide(x_dim=dataset.x_dim, z_dim=2, hidden_dims=(16,))
    fit(model, guide, "digits", epochs=1, progress=False, figures=False, out_dir=tmp_path / "python")
    python = json.loads((tmp_path / "python" / "run.json").read_text())
    for key in ("init", "model", "guide", "objective", "fit"):
        assert python[key] == cli[key], key
    first = [{k: run["segments"][0][k] for k in ("objective", "lr", "batch_size", "seed")} for run in (python, cli)]
    assert first[0] == first[1] and python["init"] == "burda"


def test_a_bucketed_loader_of_sequences_starts_at_the_real_frames_mean(tmp_path):
    """Batches of different lengths (bucketed by length) are joined, padded, to start the
    emission; the padding does not count."""
    from pyrovae.data.datasets import load_dataset
    from pyrovae.guides.hmm_vae import HMMVAEGuide

    data = load_dataset("digit-sequences")
    pyro.set_rng_seed(0)
    model, guide = HMMVAE(x_dim=64, num_units=3, z_dim=2, hidden_dims=(8,)), HMMVAEGuide(x_dim=64, z_dim=2,
                                                                                       hidden_dims=(8,))
    fit(model, guide, data.bucketed("train", batch_size=64, seed=0), epochs=1, lr=1e-12, progress=False,
        figures=False)
    frames = data.train["x"][data.train["mask"]]
    assert model.decoder[-1].bias.tolist() == pytest.approx(logits(frames.mean(0)).tolist(), abs=1e-4)


@pytest.mark.parametrize("likelihood, expected", [
    ("bernoulli", "burda"), ("continuous_bernoulli", "burda"), ("logistic-mixture", "burda"), ("gaussian", "torch"),
])
def test_the_vaes_default_init_follows_its_likelihood(likelihood, expected, tmp_path):
    """``vae``'s default start by likelihood, measured on MNIST (docs/vae.md#initialisation): the
    data-mean start for all but the Gaussian, which is better from torch's layers; ``fit()`` and
    ``pyrovae fit`` both pick it, and run.json records it."""
    from pyrovae.cli import main
    from pyrovae.models import VAE, HypersphericalVAE

    model = VAE(x_dim=16, z_dim=2, hidden_dims=(8,), likelihood=likelihood)
    assert default_init(model) == expected
    assert default_init(HypersphericalVAE(x_dim=16, z_dim=3, likelihood=likelihood)) == expected  # svae: measured too
    assert default_init(VAE(x_dim=16, z_dim=2, likelihood=likelihood, scale=0.1) if likelihood == "gaussian"
                        else model) == expected  # a fixed scale too
    data = IMAGES if likelihood == "bernoulli" else GREY
    fit(model, DiagNormalGuide(x_dim=16, z_dim=2, hidden_dims=(8,)), data, epochs=1, batch_size=32, progress=False,
        figures=False, out_dir=tmp_path / "python")
    assert json.loads((tmp_path / "python" / "run.json").read_text())["init"] == expected
    if likelihood == "logistic-mixture":  # the CLI's small data set, digits, has 17 grey levels, not 256
        return
    flags = [] if likelihood == "bernoulli" else ["--binarize", "none"]
    assert main(["fit", "--model", "vae", "--likelihood", likelihood, *flags, *QUICK, "--out", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "run.json").read_text())["init"] == expected
