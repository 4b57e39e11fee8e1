"""How a run's weights start: Glorot-uniform layers, the decoder's output bias at the data's
mean (Burda et al.'s reference code), fit(init=...) on a new run only, and its refusals."""

import json
import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit
from pyrovae.errors import UsageError
from pyrovae.guides import BottomUpGuide, DiagNormalGuide, FullCovNormalGuide
from pyrovae.models import (CVAE, M2, VAE, AssociativeCompressionNetwork, HierarchicalVAE, HypersphericalVAE,
                            LeastSquaresVAE, NeuralStatistician, VarianceVAE)
from pyrovae.nn import MLP, bias_at_data_logits_, default_init, glorot_, initialize_

G = torch.Generator().manual_seed(0)
X = torch.bernoulli(torch.rand(200, 6, generator=G).mul(0.8), generator=G)


def test_glorot_keeps_the_variance_of_a_square_layer_and_zeroes_biases():
    net = glorot_(MLP(400, (400,), 100))
    w = net[0].weight.detach()
    bound = (6 / 800) ** 0.5
    assert float(w.abs().max()) <= bound and float(net[0].bias.detach().abs().max()) == 0.0
    assert float(w.var()) == pytest.approx(2 / 800, rel=0.05)  # U(-a, a): a^2 / 3 = 2 / (in + out)
    assert float(net[2].weight.detach().var()) == pytest.approx(2 / 500, rel=0.05)


def test_the_output_bias_is_the_logit_of_the_clipped_mean():
    x = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.5]])
    lin = bias_at_data_logits_(torch.nn.Linear(4, 3), x)
    assert torch.sigmoid(lin.bias).tolist() == pytest.approx([0.75, 1e-3, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match=r"x must be \(N, 3\) for a layer of 3 outputs, got shape \(4, 2\)"):
        bias_at_data_logits_(lin, x[:, :2])


@pytest.mark.parametrize("model", [VAE(6, 2, (8,)), HierarchicalVAE(6, 2, (8,), lower_z_dims=(3,), upper_hidden_dims=(4,)),
                                   VAE(6, 2, (8,), likelihood="gaussian"), M2(x_dim=6, z_dim=2, num_classes=3),
                                   M2(x_dim=6, z_dim=2, num_classes=3, likelihood="gaussian")])
def test_init_from_data_starts_the_decoder_at_the_data_mean(model):
    model.init_from_data(x=X, y=None)
    bias = model.decoder[-1].bias
    mean = X.mean(0)
    got = bias if getattr(model, "likelihood_name", "bernoulli") == "gaussian" else torch.sigmoid(bias)
    assert got.tolist() == pytest.approx(mean.clamp(1e-3, 1 - 1e-3).tolist(), abs=1e-5)


def test_initialize_torch_changes_nothing_glorot_both_burda_also_the_bias():
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    before = [p.clone() for p in (*model.parameters(), *guide.parameters())]
    initialize_(model, guide, {"x": X}, "torch")
    assert all(torch.equal(a, b) for a, b in zip(before, (*model.parameters(), *guide.parameters())))
    initialize_(model, guide, {"x": X}, "glorot")
    assert not model.decoder[-1].bias.any() and not guide.encoder[0].bias.any()
    assert not torch.equal(before[0], model.decoder[0].weight)
    initialize_(model, guide, {"x": X}, "burda")
    assert torch.sigmoid(model.decoder[-1].bias).tolist() == pytest.approx(X.mean(0).clamp(1e-3, 1 - 1e-3).tolist(),
                                                                            abs=1e-5)
    with pytest.raises(ValueError, match="unknown init 'xavier'; choose one of torch, glorot, burda, data"):
        initialize_(model, guide, {"x": X}, "xavier")


@pytest.mark.parametrize("scheme", ["glorot", "burda"])
def test_a_guide_keeps_its_deliberate_start_through_the_init(scheme):
    """Glorot redraws every linear layer; the full-covariance guide's zero off-diagonal
    outputs (an untrained guide is the diagonal one) are put back by its ``init_start_``."""
    model, guide = VAE(6, 3, (8,)), FullCovNormalGuide(6, 3, (8,))
    offdiag = guide.encoder[-1].weight[2 * 3:]
    with torch.no_grad():
        offdiag.fill_(1.0)  # as if trained
    initialize_(model, guide, {"x": X}, scheme)
    assert not guide.encoder[-1].weight[2 * 3:].any() and not guide.encoder[-1].bias[2 * 3:].any()
    assert guide.encoder[-1].weight[:2 * 3].abs().min() > 0  # the rest is Glorot's
    assert not torch.tril(guide.encode(X[:4]).scale_tril, -1).any()


def test_initialize_data_keeps_torchs_layers_and_starts_only_the_output_at_the_data_mean():
    pyro.set_rng_seed(0)
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    before = {name: p.detach().clone() for name, p in (*model.named_parameters(), *guide.named_parameters())}
    initialize_(model, guide, {"x": X}, "data")
    after = dict((*model.named_parameters(), *guide.named_parameters()))
    output = "decoder.%d.bias" % (len(model.decoder) - 1)
    assert [n for n in before if not torch.equal(before[n], after[n])] == [output]  # nothing else moved
    assert torch.sigmoid(after[output]).tolist() == pytest.approx(X.mean(0).clamp(1e-3, 1 - 1e-3).tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="init='data' sets the output bias from the data"):
        initialize_(lambda x: None, None, {"x": X}, "data")


def test_fit_starts_a_new_run_from_the_init_and_a_resume_keeps_its_weights(tmp_path):
    def run(**kwargs):  # lr 1e-12: the weights stay where the run started
        pyro.set_rng_seed(0)
        model, guide = HierarchicalVAE(6, 2, (8,), lower_z_dims=(3,), upper_hidden_dims=(4,)), BottomUpGuide(
            6, 2, (8,), lower_z_dims=(3,), upper_hidden_dims=(4,))
        fit(model, guide, X, epochs=kwargs.pop("epochs", 1), batch_size=50, lr=1e-12, progress=False, figures=False,
            out_dir=tmp_path / "run", **kwargs)
        return torch.sigmoid(model.decoder[-1].bias.detach())

    target = X.mean(0).clamp(1e-3, 1 - 1e-3)
    assert run(init="data").tolist() == pytest.approx(target.tolist(), abs=1e-4)  # fit hands it the training rows
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "data"
    shutil.rmtree(tmp_path / "run")
    assert run(init="burda").tolist() == pytest.approx(target.tolist(), abs=1e-4)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "burda"
    assert run(init="torch", resume=True, epochs=2).tolist() == pytest.approx(target.tolist(), abs=1e-4)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "burda"  # how the run started


def test_burda_init_for_a_model_without_init_from_data_is_refused_before_anything_is_written(tmp_path):
    decoder = torch.nn.Linear(2, 6)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    guide = DiagNormalGuide(6, 2, (8,))
    with pytest.raises(UsageError, match="init='burda' sets the output bias from the data.*use init='glorot'"):
        fit(model, guide, X, epochs=1, batch_size=50, progress=False, out_dir=tmp_path / "run", init="burda")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, target", [
    (CVAE(x_dim=3, y_dim=6, z_dim=2, hidden_dims=(8,)), "y"),
    (AssociativeCompressionNetwork(x_dim=6, z_dim=2, hidden_dims=(8,)), "x"),
    (LeastSquaresVAE(x_dim=6, z_dim=2, hidden_dims=(8,)), "x"),
    (NeuralStatistician(x_dim=6, c_dim=2, z_dim=2, hidden_dims=(8,)), "x"),
    (NeuralStatistician(x_dim=6, c_dim=2, z_dim=2, hidden_dims=(8,), likelihood="gaussian"), "x"),
])
def test_the_other_pixel_decoders_start_at_the_data_mean(model, target):
    head = getattr(model, "decoder", None) or model.generator
    bias = head[-1].bias
    if isinstance(model, NeuralStatistician):  # sets of 4 items, the last item of each set padding
        mask = torch.ones(50, 4, dtype=torch.bool)
        mask[:, -1] = False
        x = X.reshape(50, 4, 6).clone()
        x[:, -1] = 1.0  # padding must not count
        before = bias.detach().clone()
        model.init_from_data(x=x, mask=mask)
        mean = X.reshape(50, 4, 6)[:, :3].reshape(-1, 6).mean(0)
        if model.likelihood_name == "gaussian":
            assert bias[:6].tolist() == pytest.approx(mean.tolist(), abs=1e-5)
            assert torch.equal(bias[6:].detach(), before[6:])  # the scale outputs keep theirs
            return
    else:
        batch = {"x": X[:, :3], "y": X} if target == "y" else {"x": X}
        model.init_from_data(**batch)
        mean = X.mean(0)
    got = bias if isinstance(model, LeastSquaresVAE) else torch.sigmoid(bias)
    assert got.tolist() == pytest.approx(mean.clamp(1e-3, 1 - 1e-3).tolist(), abs=1e-5)
    # the least-squares VAE can start there (--init burda) but measured better from torch's layers
    assert default_init(model) == ("torch" if isinstance(model, LeastSquaresVAE) else "burda")


def test_the_default_init_is_burda_where_the_output_starts_at_the_data_mean_else_torch():
    assert [default_init(m) for m in (VAE(6, 2, (8,)), M2(x_dim=6, z_dim=2, num_classes=3),
                                      HypersphericalVAE(6, 3, (8,)))] == ["burda"] * 3
    # a Gaussian likelihood (vae's, M2's on M1's features) measured better from torch's layers
    assert [default_init(m) for m in (VAE(6, 2, (8,), likelihood="gaussian"),
                                      M2(x_dim=6, z_dim=2, num_classes=3, likelihood="gaussian"))] == ["torch"] * 2
    # the variance VAE can start there (an ordinary last layer) but measured better from torch's layers
    assert default_init(VarianceVAE(x_dim=6, z_dim=2, hidden_dims=(8, 8))) == "torch"
    acn = AssociativeCompressionNetwork(x_dim=16, z_dim=2, decoder="pixelcnn", image_shape=(4, 4))
    assert default_init(acn) == "torch"
    with pytest.raises(ValueError, match="the PixelCNN decoder has none"):
        acn.init_from_data(x=X[:, :1].expand(200, 16))
    assert default_init(lambda x: None) == "torch"  # a plain function: nothing to start from the data


def test_fit_starts_a_pixel_model_at_the_data_mean_by_default_and_records_it(tmp_path):
    pyro.set_rng_seed(0)
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    fit(model, guide, X, epochs=1, batch_size=50, lr=1e-12, progress=False, figures=False, out_dir=tmp_path / "run")
    target = X.mean(0).clamp(1e-3, 1 - 1e-3)
    assert torch.sigmoid(model.decoder[-1].bias.detach()).tolist() == pytest.approx(target.tolist(), abs=1e-4)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "burda"
    pyro.set_rng_seed(0)
    torch_default = VAE(6, 2, (8,))
    pyro.set_rng_seed(0)
    model = VAE(6, 2, (8,))
    fit(model, DiagNormalGuide(6, 2, (8,)), X, epochs=1, batch_size=50, lr=1e-12, progress=False, init="torch")
    assert torch.allclose(model.decoder[-1].bias, torch_default.decoder[-1].bias)  # init="torch": as built
