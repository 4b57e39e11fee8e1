import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.data import datasets as data_module
from pyrovae.registry import DATASETS
from pyrovae.data.datasets import (DataFormatError, DataNotFoundError, DataSet, batches, list_datasets,
                          load_dataset, register_dataset, search_paths)

MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def shared_data():
    """The folder of offline data: $PYROVAE_DATA, else ../shared/data beside the repo."""
    root = os.environ.get("PYROVAE_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
    if not Path(root).is_dir():
        pytest.skip(f"no offline data folder at {root}")
    return Path(root)


def load_or_skip(name, data_dir, **kwargs):
    try:
        return load_dataset(name, data_dir=data_dir, **kwargs)
    except DataNotFoundError as error:
        pytest.skip(f"{name} files not found: {error}")


@pytest.fixture(scope="module")
def mnist(shared_data):
    return load_or_skip("mnist", shared_data)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $PYROVAE_DATA and an empty standard place, so only what a test writes is found."""
    monkeypatch.delenv("PYROVAE_DATA", raising=False)
    standard = tmp_path / "standard"
    monkeypatch.setattr(data_module, "STANDARD_PLACES", (str(standard),))
    return standard


def write_idx(path, array, magic=None):
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x00000800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(raw)
    return path


def write_idx_dataset(folder, num_train=6, num_test=4, label=0, image_shape=(28, 28), gz=True):
    """Four small IDX files; every label is ``label``, so a test can tell folders apart."""
    rng = np.random.RandomState(label)
    suffix = ".gz" if gz else ""
    for part, n in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", rng.randint(0, 256, (n, *image_shape)))
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", np.full(n, label))
    return folder


# ---- digits ---------------------------------------------------------------------------

def test_digits_splits_shapes_and_ranges():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    assert data.name == "digits" and data.binarize == "dynamic" and data.binary
    assert data.image_shape == (8, 8) and data.x_dim == 64
    assert data.dims() == {"x_dim": 64, "num_classes": 10}
    sizes = [len(split["x"]) for split in (data.train, data.valid, data.test)]
    assert sizes == [1200, 297, 300]
    for split in (data.train, data.valid, data.test):
        assert split["x"].dtype == torch.float32 and split["y"].dtype == torch.int64
        assert split["y"].shape == split["x"].shape[:1]
        assert 0.0 <= split["x"].min() and split["x"].max() <= 1.0
    # train keeps grey levels (resampled per batch); valid and test are drawn once
    assert len(data.train["x"].unique()) == 17
    assert set(data.valid["x"].unique().tolist()) == {0.0, 1.0}
    assert set(data.test["x"].unique().tolist()) == {0.0, 1.0}
    assert set(data.train["y"].unique().tolist()) == set(range(10))
    # the fixed RandomState(0) permutation: test, then valid, then train
    digits = load_digits()
    order = np.random.RandomState(0).permutation(1797)
    expected_x = torch.tensor(digits.data[order[597:]] / 16.0, dtype=torch.float32)
    assert torch.equal(data.train["x"], expected_x)
    assert data.test["y"].tolist() == digits.target[order[:300]].tolist()
    assert data.valid["y"].tolist() == digits.target[order[300:597]].tolist()


def test_digits_read_without_importing_scikit_learn_equal_its_loader():
    """The default data set's pixels and labels, read from the file scikit-learn ships without
    importing it (a CPU second saved in every fresh process), equal ``load_digits``'s."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    images, labels = data_module._read_digits()
    expected_images, expected_labels = load_digits(return_X_y=True)
    assert images.dtype == expected_images.dtype and np.array_equal(images, expected_images)
    assert np.array_equal(labels, expected_labels)
    code = ("import sys; from pyrovae.data.datasets import load_dataset; load_dataset('digits'); "
            "print('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_digits_binarize_choices_and_valid_size():
    grey = load_dataset("digits", binarize="none", valid_size=100)
    assert not grey.binary and [len(grey.valid["x"]), len(grey.train["x"])] == [100, 1397]
    assert len(grey.test["x"].unique()) > 2
    static = load_dataset("digits", binarize="static")
    assert static.binary
    for split in (static.train, static.valid, static.test):
        assert set(split["x"].unique().tolist()) == {0.0, 1.0}
    # the evaluation draw is fixed: the same on every load, and for any valid_size
    again = load_dataset("digits")
    assert torch.equal(again.test["x"], load_dataset("digits").test["x"])
    assert torch.equal(again.test["x"], load_dataset("digits", valid_size=50).test["x"])
    with pytest.raises(ValueError, match="valid_size"):
        load_dataset("digits", valid_size=1497)


def test_dynamic_transform_redraws_each_call():
    data = load_dataset("digits")
    batch = next(batches(data.train, 1200))
    generator = torch.Generator().manual_seed(0)
    first, second = data.transform(batch, generator), data.transform(batch, generator)
    assert first is not batch and first["y"] is batch["y"]
    assert set(first["x"].unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first["x"], second["x"])
    # E[Bernoulli(p)] = p; the mean of 76800 draws is within ~4 standard errors (0.0017)
    assert abs(first["x"].mean() - batch["x"].mean()) < 0.007
    grey = load_dataset("digits", binarize="none")
    assert grey.transform(batch) is batch


def test_dataset_to_and_post_init_check():
    data = load_dataset("digits", device="cpu")
    moved = data.to("cpu")
    assert moved is not data and moved.train is not data.train
    assert torch.equal(moved.valid["x"], data.valid["x"])
    with pytest.raises(ValueError, match="expected"):
        DataSet("bad", data.train, data.valid, data.test, (7, 7), "none")
    with pytest.raises(ValueError, match="dynamic"):
        DataSet("bad", data.train, data.valid, data.test, (8, 8), "sometimes")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_onto_cuda_and_batch_there():
    data = load_dataset("digits", device="cuda")
    assert data.train["x"].is_cuda and data.test["y"].is_cuda
    generator = torch.Generator().manual_seed(0)
    batch = next(batches(data.train, 64, shuffle=True, generator=generator, transform=data.transform))
    assert batch["x"].is_cuda and set(batch["x"].unique().tolist()) <= {0.0, 1.0}


# ---- the registry ---------------------------------------------------------------------

def test_registry_dispatch_and_errors(monkeypatch):
    assert {"digits", "mnist", "binarized-mnist", "fashion-mnist"} <= set(list_datasets())
    with pytest.raises(ValueError, match="binarized-mnist.*digits.*fashion-mnist.*mnist"):
        load_dataset("cifar-100")
    with pytest.raises(ValueError, match=r"\['dynamic', 'static', 'none'\]"):
        load_dataset("digits", binarize="yes")
    monkeypatch.setattr(DATASETS, "_factories", dict(DATASETS._factories))  # the one Registry class

    @register_dataset("tiny")
    def load_tiny(data_dir, binarize, valid_size):
        split = {"x": torch.full((2, 4), 0.5)}
        return DataSet("tiny", split, split, split, (2, 2), binarize or "none")

    assert "tiny" in list_datasets()
    assert load_dataset("tiny").dims() == {"x_dim": 4}
    assert DATASETS.get("tiny") is load_tiny and load_dataset("TINY").name == "tiny"

    def another_tiny(data_dir, binarize, valid_size):
        return load_tiny(data_dir, binarize, valid_size)

    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny")(another_tiny)


# ---- MNIST from the real files ---------------------------------------------------------

def test_mnist_real_files(mnist):
    assert mnist.image_shape == (28, 28) and mnist.binarize == "dynamic"
    assert [tuple(s["x"].shape) for s in (mnist.train, mnist.valid, mnist.test)] == \
        [(50000, 784), (10000, 784), (10000, 784)]
    assert mnist.test["y"].bincount().tolist() == MNIST_TEST_LABEL_COUNTS
    # train label counts minus the held-out last 10000 add up to the published totals
    counts = (mnist.train["y"].bincount() + mnist.valid["y"].bincount()).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert set(mnist.test["x"].unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= mnist.train["x"].min() and mnist.train["x"].max() == 1.0


def test_mnist_dynamic_binarization_matches_grey_mean(mnist):
    grey = mnist.train["x"][:10000]
    generator = torch.Generator().manual_seed(0)
    first = mnist.transform({"x": grey}, generator)["x"]
    second = mnist.transform({"x": grey}, generator)["x"]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    # 7.84e6 Bernoulli draws: standard error of the mean < 2e-4
    assert abs(first.mean() - grey.mean()) < 1e-3
    assert abs(mnist.test["x"].mean() - 33.791 / 255) < 1e-3


def test_mnist_grey_levels(shared_data):
    grey = load_or_skip("mnist", shared_data, binarize="none", valid_size=0)
    assert len(grey.train["x"]) == 60000 and len(grey.valid["x"]) == 0
    assert abs(grey.train["x"].mean().item() - 33.318 / 255) < 1e-4
    assert len(grey.test["x"].unique()) == 256


def test_binarized_mnist_real_file(shared_data):
    data = load_or_skip("binarized-mnist", shared_data)
    assert data.binarize == "static" and data.num_classes is None and "y" not in data.test
    assert data.dims() == {"x_dim": 784}
    assert [len(s["x"]) for s in (data.train, data.valid, data.test)] == [50000, 10000, 10000]
    assert data.test["x"].sum().item() == 1038896
    assert data.transform(data.test) is data.test
    for binarize in ("dynamic", "none"):
        with pytest.raises(ValueError, match="already binary"):
            load_dataset("binarized-mnist", data_dir=shared_data, binarize=binarize)


# ---- finding files ---------------------------------------------------------------------

def test_search_paths_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data_module, "STANDARD_PLACES", ("~/data", "/usr/share/datasets"))
    assert search_paths("mnist", tmp_path / "arg") == [tmp_path / "arg" / "mnist", tmp_path / "arg"]
    paths = search_paths("mnist")
    assert paths == [tmp_path / "env" / "mnist", tmp_path / "env",
                     Path.home() / "data" / "mnist", Path.home() / "data",
                     Path("/usr/share/datasets/mnist"), Path("/usr/share/datasets")]


def test_lookup_order_data_dir_then_env_then_standard(monkeypatch, tmp_path, isolated):
    write_idx_dataset(tmp_path / "arg", label=1, gz=False)  # un-gzipped names, root itself
    write_idx_dataset(tmp_path / "env" / "mnist", label=2)  # in the subdir
    write_idx_dataset(isolated / "mnist", label=3)
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "env"))

    def label_found(**kwargs):
        return load_dataset("mnist", valid_size=2, **kwargs).test["y"][0].item()

    assert label_found(data_dir=tmp_path / "arg") == 1
    assert label_found() == 2
    with pytest.raises(DataNotFoundError, match="nothing-here"):  # an explicit folder: no fallback
        label_found(data_dir=str(tmp_path / "nothing-here"))
    monkeypatch.delenv("PYROVAE_DATA")
    assert label_found() == 3


def test_missing_files_name_every_place_searched(monkeypatch, tmp_path, isolated):
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "arg")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for folder in search_paths("fashion-mnist", tmp_path / "arg"):
        assert str(folder) in message
    assert "t10k-labels-idx1-ubyte.gz" in message and "PYROVAE_DATA" in message
    assert "--data-dir" in message and "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(DataNotFoundError, match="binarized_mnist_train.amat"):
        load_dataset("binarized-mnist", data_dir=tmp_path)


# ---- malformed files -------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "wrong magic", "truncated gzip", "short"])
def test_malformed_idx_names_the_file(tmp_path, isolated, damage):
    folder = write_idx_dataset(tmp_path / "mnist")
    bad = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(bad.read_bytes())
    if damage == "truncated":
        bad.write_bytes(gzip.compress(raw[:-10]))
    elif damage == "wrong magic":
        bad.write_bytes(gzip.compress((0x00000801).to_bytes(4, "big") + raw[4:]))
    elif damage == "truncated gzip":
        bad.write_bytes(bad.read_bytes()[:100])
    else:
        bad.write_bytes(gzip.compress(raw[:10]))
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path, valid_size=2)


def test_image_label_count_mismatch(tmp_path, isolated):
    folder = write_idx_dataset(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DataFormatError, match="6 images.*5 labels"):
        load_dataset("mnist", data_dir=tmp_path, valid_size=2)


# ---- synthetic Fashion-MNIST and .amat files -------------------------------------------

def test_fashion_mnist_synthetic(tmp_path, isolated):
    write_idx_dataset(tmp_path / "fashion-mnist", num_train=7, num_test=3, label=4,
                      image_shape=(4, 5))
    data = load_dataset("fashion-mnist", data_dir=tmp_path, valid_size=2, binarize="static")
    assert data.name == "fashion-mnist" and data.image_shape == (4, 5)
    assert [tuple(s["x"].shape) for s in (data.train, data.valid, data.test)] == \
        [(5, 20), (2, 20), (3, 20)]
    assert data.test["y"].tolist() == [4, 4, 4] and data.num_classes == 10
    for split in (data.train, data.valid, data.test):
        assert set(split["x"].unique().tolist()) <= {0.0, 1.0}
    # valid is the end of the training file, in order
    grey = load_dataset("fashion-mnist", data_dir=tmp_path, valid_size=2, binarize="none")
    images = np.random.RandomState(4).randint(0, 256, (7, 4, 5))
    assert torch.equal(grey.valid["x"] * 255, torch.tensor(images[5:].reshape(2, 20),
                                                           dtype=torch.float32))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_real_files():
    data = load_dataset("fashion-mnist", data_dir=FASHION_DIR)
    assert [len(s["x"]) for s in (data.train, data.valid, data.test)] == [50000, 10000, 10000]
    assert data.image_shape == (28, 28)
    assert data.test["y"].bincount().tolist() == [1000] * 10


def test_binarized_mnist_amat_text(tmp_path, isolated):
    rng = np.random.RandomState(0)
    rows = {part: rng.randint(0, 2, (n, 784)) for part, n in (("train", 3), ("valid", 2), ("test", 1))}
    for part, array in rows.items():
        lines = "".join(" ".join(map(str, row)) + "\n" for row in array)
        (tmp_path / f"binarized_mnist_{part}.amat").write_text(lines)
    data = load_dataset("binarized_mnist", data_dir=tmp_path)
    assert torch.equal(data.train["x"], torch.tensor(rows["train"], dtype=torch.float32))
    assert data.test["x"].shape == (1, 784) and data.binarize == "static"
    (tmp_path / "binarized_mnist_test.amat").write_text(" ".join(["2"] * 784) + "\n")
    with pytest.raises(DataFormatError, match="binarized_mnist_test.amat"):
        load_dataset("binarized-mnist", data_dir=tmp_path)


def test_binarized_mnist_npz_checked(tmp_path, isolated):
    np.savez(tmp_path / "binarized_mnist.npz", train=np.zeros((2, 784), np.uint8),
             valid=np.zeros((1, 784), np.uint8))
    with pytest.raises(DataFormatError, match="binarized_mnist.npz"):
        load_dataset("binarized-mnist", data_dir=tmp_path)


# ---- batches ---------------------------------------------------------------------------

def make_split(num_rows=10):
    return {"x": torch.arange(num_rows * 3, dtype=torch.float32).reshape(num_rows, 3),
            "y": torch.arange(num_rows)}


def test_shuffled_batches_cover_every_row_once():
    split = make_split(10)
    seen = [batch for batch in batches(split, 3, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))]
    assert [len(batch["y"]) for batch in seen] == [3, 3, 3, 1]
    rows = torch.cat([batch["y"] for batch in seen])
    assert sorted(rows.tolist()) == list(range(10)) and rows.tolist() != list(range(10))
    for batch in seen:  # rows stay aligned across keys
        assert torch.equal(batch["x"], split["x"][batch["y"]])


def test_shuffle_order_follows_the_generator_seed():
    split = make_split(50)

    def order(seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.cat([b["y"] for b in batches(split, 8, shuffle=True, generator=generator)])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_unshuffled_batches_are_views_in_order():
    split = make_split(10)
    seen = list(batches(split, 4))
    assert torch.equal(torch.cat([b["y"] for b in seen]), split["y"])
    for batch in seen:
        assert batch["x"].untyped_storage().data_ptr() == split["x"].untyped_storage().data_ptr()
    seen[0]["x"][0, 0] = -1.0
    assert split["x"][0, 0] == -1.0


def test_drop_last_and_transform():
    split = make_split(10)
    assert [len(b["y"]) for b in batches(split, 4, drop_last=True)] == [4, 4]
    assert [len(b["y"]) for b in batches(split, 5, drop_last=True)] == [5, 5]
    assert [len(b["y"]) for b in batches(split, 4, shuffle=True, drop_last=True)] == [4, 4]
    marked = list(batches(split, 4, transform=lambda b: {**b, "seen": True}))
    assert len(marked) == 3 and all(b["seen"] for b in marked)
    assert list(batches(make_split(0), 4)) == []


def test_batches_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(make_split(), 0))
    with pytest.raises(ValueError, match="rows"):
        list(batches({"x": torch.zeros(3, 2), "y": torch.zeros(4)}, 2))
