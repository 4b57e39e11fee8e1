"""M1+M2 (Kingma et al. 2014): M2's Gaussian likelihood for continuous features (closed-form
log-density, fixed and learned scale, enumerated shapes, option errors, classifies continuous
clusters from few labels, the CLI), and pyrovae/data/features.py (a guide's posterior means for every split, the
labels kept row for row, the same labelled rows as on the images)."""

import math

import pyro
import pytest
import torch

from pyrovae import fit
from pyrovae.data.datasets import load_dataset
from pyrovae.data.features import encode_means, encoded_features
from pyrovae.data.semisupervised import semi_supervised
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2
from tests.cli.helpers import pyrovae
from tests.contract import check_contract


def gaussian_log_density(x, mean, scale):
    return (-0.5 * ((x - mean) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("scale", [None, 0.3])
def test_the_gaussian_likelihood_is_the_normal_density_of_the_decoder_mean(scale):
    torch.manual_seed(0)
    model = M2(x_dim=5, num_classes=3, z_dim=2, hidden_dims=(8,), likelihood="gaussian", scale=scale)
    if scale is None:  # a learned scale per dimension, not all equal
        with torch.no_grad():
            model.raw_scale.copy_(torch.linspace(-1.0, 1.0, 5))
    z, y, x = torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), torch.randn(4, 5)
    mean = model.decoder(torch.cat([z, torch.nn.functional.one_hot(y, 3).float()], -1))
    sigma = torch.full((5,), 0.3) if scale is not None else torch.nn.functional.softplus(torch.linspace(-1.0, 1.0, 5)) + 1e-3
    px = model.likelihood(z, y)
    assert px.event_shape == (5,) and px.batch_shape == (4,)
    assert torch.allclose(px.log_prob(x), gaussian_log_density(x, mean, sigma), atol=1e-5)
    assert torch.allclose(px.mean, mean)
    # enumerated labels (C, 1) beside z (C, N, Z): each label's density
    zc = z.expand(3, 4, 2)
    enumerated = model.likelihood(zc, torch.arange(3).view(3, 1)).log_prob(x)
    assert enumerated.shape == (3, 4)
    for c in range(3):
        assert torch.allclose(enumerated[c], model.likelihood(z, torch.full((4,), c)).log_prob(x), atol=1e-5)


def test_one_hot_codes_equal_torchs_without_reading_the_labels_on_the_host():
    from pyrovae.models.m2 import one_hot

    for y in (torch.tensor([2, 0, 1, 1]), torch.arange(4).view(4, 1), torch.tensor([[3, 0], [1, 2]])):
        assert torch.equal(one_hot(y, 4), torch.nn.functional.one_hot(y, 4).float())
    assert one_hot(torch.tensor([1]), 3, torch.float64).dtype == torch.float64
    model = M2(x_dim=4, num_classes=3, z_dim=2, hidden_dims=(6,))
    assert model.sample(2, y=torch.tensor([0, 2])).shape == (2, 4)
    with pytest.raises(ValueError, match=r"the classes y must lie in \[0, 3\)"):  # not a row of zeros
        model.sample(2, y=torch.tensor([0, 3]))


def test_bernoulli_stays_the_default_and_options_are_checked():
    torch.manual_seed(0)
    model = M2(x_dim=4, num_classes=2, z_dim=2, hidden_dims=(6,))
    z, y, x = torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.bernoulli(torch.full((3, 4), 0.5))
    logits = model.decoder(torch.cat([z, torch.nn.functional.one_hot(y, 2).float()], -1))
    expected = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    assert torch.allclose(model.likelihood(z, y).log_prob(x), expected, atol=1e-5)
    assert not hasattr(model, "raw_scale")
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; choose one of"):
        M2(x_dim=4, likelihood="poisson")
    with pytest.raises(ValueError, match="pass likelihood='gaussian'"):
        M2(x_dim=4, scale=0.5)
    with pytest.raises(ValueError, match="scale must be positive"):
        M2(x_dim=4, likelihood="gaussian", scale=0.0)


def continuous_batch(n=16, d=6, classes=3):
    g = torch.Generator().manual_seed(1)
    labelled = torch.arange(n) % 2 == 0
    y = torch.randint(classes, (n,), generator=g)
    return {"x": torch.randn(n, d, generator=g), "y": torch.where(labelled, y, torch.full_like(y, -1)),
            "labelled": labelled}


def test_gaussian_m2_meets_the_contract_and_learns_its_scale():
    torch.manual_seed(0)
    sizes = dict(x_dim=6, num_classes=3, z_dim=2, hidden_dims=(8,))
    model, guide = M2(**sizes, likelihood="gaussian"), M2Guide(**sizes)
    batch = continuous_batch()
    check_contract(model, guide, batch, EnumELBO())
    before = model.gaussian_scale().detach().clone()
    fit(model, guide, {k: v.repeat(8, *[1] * (v.dim() - 1)) for k, v in batch.items()}, objective=EnumELBO(),
        epochs=3, batch_size=32, progress=False)
    assert not torch.allclose(model.gaussian_scale().detach(), before)  # the scale is trained


def test_encoded_features_are_the_guide_means_with_the_labels_kept():
    torch.manual_seed(0)
    digits = load_dataset("digits")
    guide = DiagNormalGuide(x_dim=64, z_dim=3, hidden_dims=(16,))
    guide.train()
    features = encoded_features(digits, guide, batch_size=100, seed=5)
    assert guide.training  # mode restored
    assert features.binarize == "none" and features.image_shape == (3,) and features.num_classes == 10
    assert features.dims() == {"x_dim": 3, "num_classes": 10}
    with torch.no_grad():
        assert torch.allclose(features.test["x"], guide.encode(digits.test["x"]).mean, atol=1e-6)
        assert torch.allclose(features.valid["x"], guide.encode(digits.valid["x"]).mean, atol=1e-6)
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(features, split)["y"], getattr(digits, split)["y"])
        assert len(getattr(features, split)["x"]) == len(getattr(digits, split)["x"])
    # the training split (grey levels, dynamic) is binarized once by the seed: reproducible, and binary inputs
    again = encoded_features(digits, guide.encode, batch_size=1000, seed=5)
    assert torch.allclose(again.train["x"], features.train["x"], atol=1e-6)
    other = encoded_features(digits, guide, seed=6)
    assert not torch.allclose(other.train["x"], features.train["x"])
    grey = encode_means(guide.encode, digits.train["x"])
    assert not torch.allclose(grey, features.train["x"])


def test_semi_supervised_features_keep_the_labelled_rows_of_the_images():
    digits = load_dataset("digits")
    features = encoded_features(digits, DiagNormalGuide(x_dim=64, z_dim=3, hidden_dims=(16,)))
    for seed in (0, 1):
        on_images, on_features = semi_supervised(digits, 100, seed=seed), semi_supervised(features, 100, seed=seed)
        assert torch.equal(on_images.train["y"], on_features.train["y"])
        assert torch.equal(on_images.train["labelled"], on_features.train["labelled"])
        assert on_images.paper_alpha == on_features.paper_alpha


def test_encode_means_says_what_it_needs():
    with pytest.raises(ValueError, match="batch shape \\(n,\\) and a vector event"):
        encode_means(lambda x: x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="takes rows"):
        encode_means(lambda x: x, torch.zeros(3))


def test_gaussian_m2_classifies_continuous_clusters_from_few_labels():
    """Three well-separated Gaussian clusters in 6 dimensions, 2 labels per class: the Gaussian
    M2 trained with ``enum`` (alpha 10) classifies held-out points far better than chance (2/3 error)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(3, 6, generator=g)

    def draw(n):
        y = torch.arange(n) % 3
        return {"x": centres[y] + torch.randn(n, 6, generator=g), "y": y}

    train, test = draw(600), draw(300)
    labelled = torch.zeros(600, dtype=torch.bool)
    labelled[:6] = True  # rows 0..5: two of each class
    rows = torch.cat([torch.arange(6, 600), torch.arange(6).repeat(10)])
    data = {"x": train["x"][rows], "labelled": labelled[rows],
            "y": torch.where(labelled[rows], train["y"][rows], torch.full_like(rows, -1))}
    sizes = dict(x_dim=6, num_classes=3, z_dim=2, hidden_dims=(32,))
    model, guide = M2(**sizes, likelihood="gaussian"), M2Guide(**sizes)
    fit(model, guide, data, objective=EnumELBO(alpha=10.0), epochs=20, batch_size=100, progress=False)
    assert guide.error_rate(test) < 0.2


def test_cli_fits_m2_with_a_gaussian_likelihood_on_grey_digits(tmp_path):
    result = pyrovae("fit", "--model", "m2", "--guide", "m2", "--data", "digits-100labels", "--binarize", "none",
                     "--likelihood", "gaussian", "--epochs", "1", "--z-dim", "4", "--hidden-dims", "32",
                     "--eval-samples", "0", "--no-progress", "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test classification error" in result.stdout
    assert '"likelihood": "gaussian"' in (tmp_path / "run" / "run.json").read_text()
