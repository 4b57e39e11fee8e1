"""The set data sets (pyrovae/data/sets.py): padding and masks, the four synthetic families
against their moments, sets by class with held-out classes, and a set data set as fit's data."""

import math

import pytest
import torch

import pyrovae  # noqa: F401  (registers the data sets)
from pyrovae.data import list_datasets, load_dataset
from pyrovae.data.sets import (FAMILIES, SetDataSet, as_sets, class_sets, distribution_sets, pad_sets,
                               sets_by_class)


def test_registered():
    assert {"synthetic-sets", "digits-sets", "mnist-sets"} <= set(list_datasets())


def test_pad_sets_masks_and_zero_padding():
    items = [torch.randn(n, 3) for n in (4, 1, 6)]
    split = pad_sets(items, 7, labels=[2, 0, 1])
    assert split["x"].shape == (3, 7, 3) and split["mask"].dtype == torch.bool
    assert split["sizes"].tolist() == [4, 1, 6] and split["y"].tolist() == [2, 0, 1]
    assert torch.equal(split["mask"], torch.arange(7) < split["sizes"][:, None])
    for s, it in enumerate(items):
        assert torch.equal(split["x"][s, :len(it)], it)
    assert bool((split["x"][~split["mask"]] == 0).all())
    # items of any shape are flattened
    assert pad_sets([torch.zeros(2, 4, 4)])["x"].shape == (1, 2, 16)
    with pytest.raises(ValueError, match="smaller than the largest set"):
        pad_sets(items, 5)
    with pytest.raises(ValueError, match="same size"):
        pad_sets([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="at least one item"):
        pad_sets([torch.zeros(0, 3)])


def test_as_sets_shapes():
    x, mask = as_sets(torch.zeros(4, 5))  # scalars
    assert x.shape == (4, 5, 1) and mask.all() and mask.shape == (4, 5)
    with pytest.raises(ValueError, match=r"mask has shape \(4, 6\)"):
        as_sets(torch.zeros(4, 5, 2), torch.ones(4, 6))


def moments(values):
    centred = values - values.mean()
    var = centred.pow(2).mean()
    return float(values.mean()), float(var), float(centred.pow(3).mean() / var ** 1.5), float(centred.pow(4).mean() / var ** 2)


def test_the_four_families_have_the_drawn_mean_and_variance_and_their_shapes():
    """One large set of each family: its mean and variance are the drawn ones, and its skewness
    and kurtosis are the family's (Gaussian 0, 3; uniform 0, 1.8; exponential 2, 9; Laplace 0, 6)."""
    split = distribution_sets(4, 200_000, seed=0)
    expected = {"gaussian": (0.0, 3.0), "uniform": (0.0, 1.8), "exponential": (2.0, 9.0), "laplace": (0.0, 6.0)}
    assert split["y"].tolist() == [0, 1, 2, 3]
    for s, name in enumerate(FAMILIES):
        mean, var, skew, kurt = moments(split["x"][s, :, 0].double())
        assert mean == pytest.approx(float(split["mean"][s]), abs=0.02)
        assert var == pytest.approx(float(split["var"][s]), rel=0.03)
        assert skew == pytest.approx(expected[name][0], abs=0.1), name
        assert kurt == pytest.approx(expected[name][1], rel=0.1), name
    assert bool(((split["mean"] >= -1) & (split["mean"] <= 1)).all())
    many = distribution_sets(400, 5, seed=1)
    assert bool(((many["var"] >= 0.5) & (many["var"] <= 2.0)).all())
    assert float(many["mean"].min()) < -0.9 and float(many["var"].max()) > 1.9  # the ranges are covered
    assert torch.equal(distribution_sets(8, 10, seed=3)["x"], distribution_sets(8, 10, seed=3)["x"])


def test_varying_sizes_are_padded_and_masked():
    split = distribution_sets(50, 30, min_size=5, seed=0)
    assert split["x"].shape == (50, 30, 1)
    assert int(split["sizes"].min()) >= 5 and int(split["sizes"].max()) <= 30 and len(split["sizes"].unique()) > 5
    assert torch.equal(split["mask"].sum(1), split["sizes"])
    assert bool((split["x"][~split["mask"]] == 0).all()) and bool((split["x"][split["mask"]] != 0).all())


def test_sets_by_class_one_class_a_set_disjoint_or_drawn():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.stack([torch.full((2,), float(i)) for i in range(60)])  # the row's index as its value
    disjoint = sets_by_class(x, y, 6, seed=0)
    assert len(disjoint["x"]) == 9 and sorted(disjoint["y"].tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    rows = disjoint["x"][..., 0].long()
    assert len(rows.flatten().unique()) == 54  # no row twice
    assert bool((y[rows] == disjoint["y"][:, None]).all())  # every item of a set is of its class
    drawn = sets_by_class(x, y, 6, classes=[1, 2], num_sets=10, min_size=2, seed=1)
    rows = drawn["x"][..., 0].long()
    assert set(drawn["y"].tolist()) == {1, 2}
    assert bool((y[rows][drawn["mask"]] == drawn["y"][:, None].expand_as(rows)[drawn["mask"]]).all())
    for s in range(10):  # distinct items within a set
        real = rows[s][drawn["mask"][s]]
        assert len(real.unique()) == len(real)
    with pytest.raises(ValueError, match="class 0 has 20 rows, fewer than set_size=25"):
        sets_by_class(x, y, 25)
    del g


def test_digits_sets_hold_out_digits_7_to_9():
    data = load_dataset("digits-sets")
    assert isinstance(data, SetDataSet) and data.dims() == {"x_dim": 64, "likelihood": "bernoulli", "num_classes": 10}
    assert data.held_out == {"train": (0, 1, 2, 3, 4, 5, 6), "valid": (0, 1, 2, 3, 4, 5, 6), "test": (7, 8, 9)}
    assert set(data.train["y"].tolist()) == set(range(7)) and set(data.valid["y"].tolist()) <= set(range(7))
    assert set(data.test["y"].tolist()) == {7, 8, 9}
    assert data.train["x"].shape == (2000, 5, 64) and bool(data.train["mask"].all())
    # test images are binary (drawn once), training images grey (redrawn each batch)
    assert set(data.test["x"].unique().tolist()) <= {0.0, 1.0}
    assert data.binarize == "dynamic" and len(data.train["x"].unique()) > 2
    # every digit image of the held-out classes, from any split, is in at most one test set
    digits = load_dataset("digits")
    held = sum(int((getattr(digits, s)["y"] >= 7).sum()) for s in ("train", "valid", "test"))
    assert len(data.test["x"]) == sum(int((torch.cat([getattr(digits, s)["y"] for s in ("train", "valid", "test")])
                                          == k).sum()) // 5 for k in (7, 8, 9))
    assert len(data.test["x"]) * 5 <= held
    batch = data.transform({k: v[:4] for k, v in data.train.items()}, torch.Generator().manual_seed(0))
    assert set(batch["x"].unique().tolist()) <= {0.0, 1.0} and batch["x"].shape == (4, 5, 64)


def test_class_sets_refuse_overlapping_classes_and_unlabelled_data():
    digits = load_dataset("digits")
    with pytest.raises(ValueError, match=r"classes \[6\] are in both"):
        class_sets(digits, 5, train_classes=range(7), test_classes=(6, 7))


def test_set_data_set_checks_its_splits():
    split = pad_sets([torch.zeros(2, 3), torch.zeros(3, 3)])
    SetDataSet("ok", split, split, split, (3,), "none")
    bad = {**split, "sizes": torch.tensor([2, 2])}
    with pytest.raises(ValueError, match="sizes are not the mask's counts"):
        SetDataSet("bad", bad, split, split, (3,), "none")
    with pytest.raises(ValueError, match="missing"):
        SetDataSet("bad", {"x": split["x"]}, split, split, (3,), "none")
    with pytest.raises(ValueError, match=r"expected \(sets, items, 4\)"):
        SetDataSet("bad", split, split, split, (4,), "none")


def test_synthetic_sets_registered_split_sizes():
    data = load_dataset("synthetic-sets")
    assert [len(getattr(data, s)["x"]) for s in ("train", "valid", "test")] == [4000, 500, 1000]
    assert data.train["x"].shape[1:] == (200, 1) and data.dims()["likelihood"] == "gaussian"
    assert data.classes == FAMILIES and torch.equal(torch.bincount(data.test["y"]), torch.full((4,), 250))
    with pytest.raises(ValueError, match="binarize"):
        load_dataset("synthetic-sets", binarize="static")
    assert math.isfinite(float(data.test["x"].sum()))


def test_fashion_mnist_classes_as_sets_hold_out_7_to_9():
    from pyrovae.data.datasets import load_dataset

    try:
        data = load_dataset("fashion-mnist-sets")
    except FileNotFoundError as error:  # the Debian package dataset-fashion-mnist is not installed
        pytest.skip(str(error).splitlines()[0])
    assert set(data.test["y"].tolist()) == {7, 8, 9} and set(data.train["y"].tolist()) <= set(range(7))
    assert data.train["x"].shape[1:] == (5, 784) and bool(data.train["mask"].all())
