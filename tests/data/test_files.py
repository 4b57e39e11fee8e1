"""Reading the user's files: image folders, array files, module:function; run.json's record and
its verification; one-line errors naming the file."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.data import DataChangedError, DataError, as_source, load_data_path, verify
from pyrovae.data.files import held_out_split

COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def colour_folder(root, size=(6, 4), per_class=5):
    """class folders cat/ (red images) and dog/ (blue), each image of size (W, H) = size."""
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, rgb).save(root / name / f"{i}.png")
    return root


def test_colour_folder_with_classes(tmp_path):
    data = load_data_path(colour_folder(tmp_path / "pets"))
    assert data.kind == "images" and data.image_shape == (3, 4, 6) and data.classes == ["cat", "dog"]
    assert data.dims() == {"x_dim": 72, "num_classes": 2, "image_shape": [3, 4, 6],
                           "likelihood": "logistic-mixture"}  # 8-bit images
    assert [len(data.train), len(data.valid), len(data.test)] == [8, 1, 1]
    files = sorted(str(f) for d in (data.train, data.valid, data.test) for f in d.files)
    assert len(set(files)) == 10
    batch = as_source(data.train, "cpu").first_batch(8)
    assert batch["x"].shape == (8, 72) and batch["x"].dtype == torch.float32
    for x, y in zip(batch["x"], batch["y"]):  # channels first: red is the first 24 values
        expected = torch.tensor(COLOURS[data.classes[y]], dtype=torch.float32).repeat_interleave(24) / 255
        assert torch.equal(x, expected)
    streamed = as_source(data.train, "cpu", max_bytes=0).first_batch(8)
    assert torch.equal(streamed["x"], batch["x"]) and torch.equal(streamed["y"], batch["y"])
    described = data.describe()
    assert described["count"] == {"train": 8, "valid": 1, "test": 1} and described["shape"] == [3, 4, 6]
    assert described["checksum"].startswith("sha256:") and described["options"]["color"] == "rgb"
    verify(described)
    Image.new("RGB", (6, 4), (0, 255, 0)).save(tmp_path / "pets" / "dog" / "9.png")
    with pytest.raises(DataChangedError, match=r"pets: the data changed since the run read it"):
        verify(described)


def test_splits_from_folders_grey_auto_and_forced_colour(tmp_path):
    for split, count in (("train", 4), ("valid", 2), ("test", 3)):
        (tmp_path / split).mkdir()
        for i in range(count):
            Image.new("L", (5, 5), 40 * i).save(tmp_path / split / f"{i}.jpg", quality=100)
    data = load_data_path(tmp_path)
    assert [len(data.train), len(data.valid), len(data.test)] == [4, 2, 3]
    assert data.image_shape == (5, 5) and data.dims() == {"x_dim": 25, "image_shape": [5, 5], "likelihood": "logistic-mixture"}
    assert data.classes is None
    assert abs(float(data.test[2]["x"].mean()) - 80 / 255) < 2 / 255  # JPEG, nearly lossless
    rgb = load_data_path(tmp_path, color="rgb")
    assert rgb.image_shape == (3, 5, 5) and torch.equal(rgb.test[2]["x"][:25], rgb.test[2]["x"][25:50])


def test_mixed_sizes_need_image_size(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    Image.new("L", (32, 28), 255).save(tmp_path / "b.png")
    Image.new("L", (28, 28)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"b.png is 32x28 but .*a.png is 28x28 \(width x height\); pass "
                                        r"--image-size"):
        load_data_path(tmp_path)
    data = load_data_path(tmp_path, image_size=(8, 10))
    assert data.image_shape == (8, 10)
    everything = torch.cat([d[i]["x"] for d in (data.train, data.valid, data.test) for i in range(len(d))])
    assert everything.shape == (240,) and sorted(set(everything.tolist())) == [0.0, 1.0]


def test_resize_covers_then_crops_the_centre(tmp_path):
    image = Image.new("L", (12, 4), 0)  # wide: left third black, middle white, right third black
    image.paste(255, (4, 0, 8, 4))
    for i in range(3):
        image.save(tmp_path / f"{i}.png")
    x = load_data_path(tmp_path, image_size=4).train[0]["x"].reshape(4, 4)
    assert torch.equal(x, torch.ones(4, 4))  # the centre 4x4 of the 12x4 image


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder is empty"):
        load_data_path(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"text: no images found .* it holds notes.txt"):
        load_data_path(tmp_path / "text")
    colour_folder(tmp_path / "broken")
    (tmp_path / "broken" / "dog" / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=r"^\S*broken/dog/7.png: cannot be read as an image"):
        load_data_path(tmp_path / "broken")
    colour_folder(tmp_path / "truncated")
    good = (tmp_path / "truncated" / "cat" / "2.png").read_bytes()
    (tmp_path / "truncated" / "cat" / "2.png").write_bytes(good[:45])  # the header parses, the pixels do not
    data = load_data_path(tmp_path / "truncated")
    with pytest.raises(DataError, match=r"truncated/cat/2.png: cannot be read as an image"):
        for split in (data.train, data.valid, data.test):
            as_source(split, "cpu")
    with pytest.raises(DataError, match="no such file or folder"):
        load_data_path(tmp_path / "nowhere")


def test_npy_memory_mapped_uint8_with_image_shape(tmp_path):
    pixels = np.random.RandomState(1).randint(0, 256, size=(40, 2, 3, 4)).astype(np.uint8)
    np.save(tmp_path / "faces.npy", pixels)
    data = load_data_path(tmp_path / "faces.npy")
    assert data.kind == "array" and data.image_shape == (2, 3, 4) and data.dims() == {"x_dim": 24, "image_shape": [2, 3, 4],
                                                                                 "likelihood": "logistic-mixture"}
    assert [len(data.train), len(data.valid), len(data.test)] == [32, 4, 4]
    expected = torch.from_numpy(pixels.reshape(40, 24).astype(np.float32)) / 255
    for split in (data.train, data.valid, data.test):
        source = as_source(split, "cpu", max_bytes=0)
        got = torch.cat([b["x"] for b in source.epoch_batches(3, shuffle=True, seed=0, epoch=0)])
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, expected[torch.from_numpy(split.indices)[order]])
    described = data.describe()
    assert described["count"] == {"train": 32, "valid": 4, "test": 4} and described["shape"] == [2, 3, 4]
    verify(described)
    with open(tmp_path / "faces.npy", "r+b") as file:  # one byte of the last MB changes
        file.seek(-1, os.SEEK_END)
        file.write(bytes([(int(pixels.flat[-1]) + 1) % 256]))
    with pytest.raises(DataChangedError, match="faces.npy: the data changed"):
        verify(described)


def test_nan_in_an_array_names_the_file_and_row(tmp_path):
    x = np.zeros((50, 3), dtype=np.float32)
    x[37, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(DataError, match=r"bad.npy: row 37 holds NaN or inf values"):
        load_data_path(tmp_path / "bad.npy")
    x[37, 1] = np.inf
    np.savez(tmp_path / "bad.npz", train=x, test=x[:5])
    with pytest.raises(DataError, match=r"bad.npz \[train\]: row 37 holds NaN or inf"):
        load_data_path(tmp_path / "bad.npz")
    np.save(tmp_path / "ints.npy", np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(DataError, match="ints.npy: x has dtype int64; save float"):
        load_data_path(tmp_path / "ints.npy")


def test_npz_layouts(tmp_path):
    x, y = np.random.RandomState(0).rand(30, 4).astype(np.float32), np.arange(30) % 5
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    data = load_data_path(tmp_path / "xy.npz")
    assert data.dims() == {"x_dim": 4, "num_classes": 5} and len(data.train) == 24
    item = data.valid[0]
    row = int(data.valid.indices[0])
    assert torch.equal(item["x"], torch.from_numpy(x[row])) and int(item["y"]) == y[row]
    np.savez(tmp_path / "splits.npz", train=x, valid=x[:3], test=x[:4])
    data = load_data_path(tmp_path / "splits.npz")
    assert [len(data.train), len(data.valid), len(data.test)] == [30, 3, 4]
    np.savez(tmp_path / "other.npz", images=x)
    with pytest.raises(DataError, match=r"other.npz: has arrays \['images'\]; expected x"):
        load_data_path(tmp_path / "other.npz")


def test_module_function(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "class Squares(torch.utils.data.Dataset):\n"
        "    image_shape = (2, 2)\n"
        "    def __len__(self): return 20\n"
        "    def __getitem__(self, i): return torch.full((4,), float(i))\n"
        "def make(): return Squares()\n"
        "def bad(): return [1, 2]\n")
    data = load_data_path(f"{tmp_path / 'mydata.py'}:make")
    assert data.kind == "function" and data.image_shape == (2, 2)
    assert [len(data.train), len(data.valid), len(data.test)] == [16, 2, 2]
    assert data.describe()["checksum"].startswith("sha256:")
    with pytest.raises(DataError, match=r"mydata.py:bad: returned a list; return a torch Dataset"):
        load_data_path(f"{tmp_path / 'mydata.py'}:bad")
    with pytest.raises(DataError, match=r"no_such_module_xyz:make: cannot import no_such_module_xyz"):
        load_data_path("no_such_module_xyz:make")


def test_held_out_split_is_a_fixed_partition():
    parts = held_out_split(100, 0.1, 0.2, "data")
    assert {k: len(v) for k, v in parts.items()} == {"test": 20, "valid": 10, "train": 70}
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    assert all(np.array_equal(parts[k], held_out_split(100, 0.1, 0.2, "data")[k]) for k in parts)
    with pytest.raises(DataError, match="data has 2 datapoints: too few"):
        held_out_split(2, 0.1, 0.1, "data")


def test_8_bit_data_ask_for_the_discretized_logistic_and_models_get_what_they_have(tmp_path):
    """uint8 arrays and image folders are 8-bit: their dims ask for ``logistic-mixture``; a float
    array does not; a model without it gets the next of EIGHT_BIT_LIKELIHOODS it has."""
    from pyrovae.cli.common import fill_for
    from pyrovae.data.files import EIGHT_BIT_LIKELIHOODS, likelihood_for
    from pyrovae.registry import build, get_model

    np.save(tmp_path / "bytes.npy", np.zeros((20, 3), np.uint8))
    np.save(tmp_path / "floats.npy", np.zeros((20, 3), np.float32))
    assert load_data_path(tmp_path / "bytes.npy").dims() == {"x_dim": 3, "likelihood": "logistic-mixture"}
    assert load_data_path(tmp_path / "floats.npy").dims() == {"x_dim": 3}
    for name in ("vae", "svae", "conv-vae", "pixelcnn-vae"):
        assert likelihood_for(get_model(name), "logistic-mixture") == "logistic-mixture"
    assert likelihood_for(get_model("m2"), "logistic-mixture") == "gaussian"
    assert likelihood_for(get_model("hvae"), "logistic-mixture") == "logistic-mixture"  # no likelihood option
    assert fill_for(get_model("statistician"), {"x_dim": 3, "likelihood": "logistic-mixture"}) == {
        "x_dim": 3, "likelihood": "gaussian"}
    colour = load_data_path(colour_folder(tmp_path / "pets"))  # a convolutional pair reads the rows as (3, 4, 6)
    model = build(get_model("conv-vae"), {"channels": (2,)}, fill=fill_for(get_model("conv-vae"), colour.dims()))
    assert model.image_shape == (3, 4, 6) and model.options.likelihood == "logistic-mixture"
    assert EIGHT_BIT_LIKELIHOODS[0] == "logistic-mixture"


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_binarize_grey_images_row_by_row(tmp_path, binarize):
    """``binarize``: valid and test (and train, for static) are drawn once, each row from its
    own seed (the same binary rows on every read); dynamic draws the training batches anew."""
    root = tmp_path / "grey"
    root.mkdir()
    for i in range(40):
        Image.new("L", (4, 4), 64 + 4 * i).save(root / f"{i}.png")
    grey = load_data_path(root)
    data = load_data_path(root, binarize=binarize)
    assert data.binarize == binarize and "likelihood" not in data.dims()
    for split in ("valid", "test") + (("train",) if binarize == "static" else ()):
        first, again = getattr(data, split)[0]["x"], getattr(data, split)[0]["x"]
        assert torch.equal(first, again) and set(first.unique().tolist()) <= {0.0, 1.0}
    rows = torch.stack([grey.train[i]["x"] for i in range(len(grey.train))])
    drawn = data.transform({"x": rows}, torch.Generator().manual_seed(0))["x"]
    if binarize == "dynamic":
        assert torch.equal(data.train[0]["x"], grey.train[0]["x"])  # grey until the batch is drawn
        assert set(drawn.unique().tolist()) == {0.0, 1.0} and abs(drawn.mean() - rows.mean()) < 0.05
    else:
        assert torch.equal(drawn, rows)  # drawn once already
