"""M2 (Kingma et al. 2014): the contract, the semi-supervised data sets (balanced labels chosen by
a seed, hidden labels, the stream and the paper's alpha), log p(x) summing over y, and the
``pyrovae fit`` command that trains it on the digits with 100 labels and reports the test error."""

import re

import pyro
import pytest
import torch

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import list_datasets, load_dataset
from pyrovae.data.semisupervised import MIN_REPEATS, UNKNOWN, balanced_labels, default_repeats, semi_supervised
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2
from tests.cli.helpers import pyrovae
from tests.contract import check_contract, check_pair


def small_pair(x_dim=64):
    torch.manual_seed(0)
    sizes = dict(x_dim=x_dim, z_dim=3, hidden_dims=(16,))
    return M2(**sizes), M2Guide(**sizes)


def test_m2_meets_the_contract_with_enum():
    model, guide = small_pair(12)
    check_contract(model, guide, model.example_batch(), EnumELBO())


def test_the_registered_pair_fits_saves_and_loads(tmp_path):
    check_pair("m2", "m2", tmp_path)  # fit with the guide's objective (enum), save, load, same log-weights


def test_balanced_labels_are_chosen_by_the_seed():
    y = torch.arange(200) % 10
    a, b, again = balanced_labels(y, 30, seed=0), balanced_labels(y, 30, seed=1), balanced_labels(y, 30, seed=0)
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert torch.bincount(y[a], minlength=10).tolist() == [3] * 10 and len(set(a.tolist())) == 30
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        balanced_labels(y, 25)


def test_semi_supervised_digits_hides_all_but_the_chosen_labels():
    base = load_dataset("digits")
    data = load_dataset("digits-100labels")
    train = data.train
    n_base = len(base.train["x"])
    assert data.num_labels == 100 and data.num_unlabelled == n_base - 100
    assert len(train["x"]) == data.num_unlabelled + data.repeats * 100
    assert set(train) == {"x", "y", "labelled"} and train["labelled"].dtype == torch.bool
    assert (train["y"][~train["labelled"]] == UNKNOWN).all()  # no hidden label leaks
    kept = data.labelled_rows()
    assert torch.bincount(kept["y"], minlength=10).tolist() == [10] * 10
    # the kept labels are the true labels of those images
    match = (kept["x"].unsqueeze(1) == base.train["x"].unsqueeze(0)).all(-1)  # (100, N)
    assert (match.any(1)).all()
    assert all(int(kept["y"][i]) in base.train["y"][match[i]].tolist() for i in range(100))
    # test and valid keep their labels (for the error) and are all unlabelled (their bound sums over y)
    assert torch.equal(data.test["y"], base.test["y"]) and not data.test["labelled"].any()
    assert data.paper_alpha == pytest.approx(0.1 * n_base / (data.repeats * 100))
    other = load_dataset("digits-100labels-seed1")
    assert not torch.equal(other.labelled_rows()["x"], kept["x"])
    assert {"mnist-100labels", "mnist-3000labels-seed2", "digits-100labels-seed2"} <= set(list_datasets())


def test_the_stream_repeats_labelled_rows_to_a_tenth_of_an_epoch_and_at_least_ten_times():
    base = load_dataset("digits")
    data = semi_supervised(base, 20, seed=3, unlabelled=500)
    assert data.num_unlabelled == 500 and round(0.1 * 520 / 20) == 3 and data.repeats == MIN_REPEATS == 10
    assert int(data.train["labelled"].sum()) == 20 * data.repeats
    assert data.paper_alpha == pytest.approx(0.1 * 520 / (20 * data.repeats))
    # a tenth of the stream where that is more: 100 labels of MNIST with all 49,900 others, 50
    assert default_repeats(49_900, 100) == 50 and default_repeats(9_900, 100) == 10
    assert default_repeats(47_000, 3000) == 10 and default_repeats(100, 20) == 10
    with pytest.raises(ValueError, match="no labels"):
        semi_supervised(load_dataset("digits").__class__("nolabels", {"x": base.train["x"]}, base.valid, base.test,
                                                          base.image_shape, "none"), 10)


def test_log_likelihood_sums_over_y_and_bounds_the_elbo():
    model, guide = small_pair()
    data = load_dataset("digits-100labels")
    fit(model, guide, data, objective="enum", epochs=2, batch_size=100, progress=False)
    test = {"x": data.test["x"][:50]}
    pyro.set_rng_seed(0)
    est = log_likelihood(model, guide, test, num_samples=200)
    assert torch.isfinite(est.per_datapoint).all()
    assert est.log_likelihood >= est.elbo  # IWAE over (y, z) >= ELBO
    assert 0.0 <= guide.error_rate(data.test) <= 1.0


def fit_on_digits(tmp_path, epochs):
    out = tmp_path / "run"
    result = pyrovae("fit", "--model", "m2", "--guide", "m2", "--data", "digits-100labels", "--epochs", epochs,
                     "--z-dim", "4", "--hidden-dims", "64", "--eval-samples", "10", "--no-progress", "--out", out,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return out, result


def test_cli_fit_trains_m2_on_digits_with_100_labels_and_reports_the_test_error(tmp_path):
    out, result = fit_on_digits(tmp_path, 5)
    error = re.search(r"test classification error: ([\d.]+)% \(300 images\)", result.stdout)
    assert error, result.stdout
    assert float(error.group(1)) < 80.0  # trained (5 epochs, 100 labels): chance is 90% (± 1.7 on 300 images)
    assert "test log-likelihood (K=10)" in result.stdout
    assert '"name": "enum"' in (out / "run.json").read_text()


@pytest.mark.slow
def test_cli_evaluate_diagnose_and_resume_an_m2_run(tmp_path):
    out, _ = fit_on_digits(tmp_path, 2)
    evaluated = pyrovae("evaluate", out, "--num-samples", "20", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test log-likelihood" in evaluated.stdout
    diagnosed = pyrovae("diagnose", out, "--num-samples", "20", cwd=tmp_path, timeout=300)
    assert diagnosed.returncode == 0, diagnosed.stderr
    assert "skipped monitors: the guide samples 2 latent sites" in diagnosed.stdout  # said, not crashed
    resumed = pyrovae("fit", "--out", out, "--resume", "--epochs", "3", "--no-progress", "--eval-samples", "0",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "test classification error" in resumed.stdout
