"""``pyrovae fit --data PATH`` in real processes: a colour PNG folder with class sub-folders,
then ``pyrovae evaluate`` of that run; data changed since the run refused; each kind of bad
data one line on stderr naming the file, exit status 1."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli.helpers import one_line_error, pyrovae

QUICK = ["--epochs", "1", "--batch-size", "8", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "5",
         "--no-progress", "--likelihood", "continuous_bernoulli"]


def colour_folder(root, sizes=((10, 12),) * 12):
    """Class sub-folders cats/ and dogs/ of random RGB PNGs (width x height from ``sizes``)."""
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """``pyrovae fit --data photos --image-size 8`` on 24 colour PNGs in cats/ and dogs/."""
    root = tmp_path_factory.mktemp("photos")
    colour_folder(root / "photos")
    done = pyrovae("fit", "--data", "photos", "--image-size", "8", "--out", "run", *QUICK, cwd=root)
    assert done.returncode == 0, done.stderr
    return root, done


def test_fit_on_a_colour_image_folder_records_what_it_read(photos_run):
    root, done = photos_run
    assert "data on-device: 20 rows" in done.stdout  # 24 images: 2 held out for valid, 2 for test
    data = json.loads((root / "run" / "run.json").read_text())["data"]
    assert data["dims"] == {"x_dim": 3 * 8 * 8, "num_classes": 2, "image_shape": [3, 8, 8],
                            "likelihood": "logistic-mixture"}
    files = data["files"]
    assert files["kind"] == "images" and files["path"] == str(root / "photos")
    assert files["count"] == {"train": 20, "valid": 2, "test": 2} and files["shape"] == [3, 8, 8]
    assert files["classes"] == ["cats", "dogs"] and files["options"]["image_size"] == 8
    assert (root / "run" / "samples.png").is_file()


def test_evaluate_diagnose_and_sample_read_the_folder_again(photos_run):
    root, _ = photos_run
    evaluated = pyrovae("evaluate", "run", "--num-samples", "10", "--json", cwd=root)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["num_datapoints"] == 2 and np.isfinite(result["log_likelihood"])
    diagnosed = pyrovae("diagnose", "run", "--num-samples", "10", "--gap-datapoints", "0", "--idata-draws", "5",
                        cwd=root)
    assert diagnosed.returncode == 0, diagnosed.stderr
    assert "on 2 test datapoints" in diagnosed.stdout and (root / "run" / "report.md").is_file()
    sampled = pyrovae("sample", "run", "--n", "4", cwd=root)
    assert sampled.returncode == 0 and (root / "run" / "samples-4-seed0.png").is_file(), sampled.stderr


def test_evaluate_and_resume_refuse_a_folder_that_changed(photos_run):
    root, _ = photos_run
    Image.fromarray(np.zeros((12, 10, 3), dtype=np.uint8)).save(root / "photos" / "cats" / "new.png")
    one_line_error(pyrovae("evaluate", "run", "--num-samples", "10", "--force", cwd=root), 1,
                   str(root / "photos"), "the data changed since the run read it")
    one_line_error(pyrovae("fit", "--out", "run", "--resume", "--epochs", "2", cwd=root), 1,
                   str(root / "photos"), "the data changed since the run read it")


def plain_folder(root, mode, n=30, size=(9, 7)):
    """A flat folder of ``n`` random 8-bit PNGs, grey (``"L"``) or colour (``"RGB"``)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("mode, color", [("L", []), ("RGB", []), ("RGB", ["--color", "rgb"])],
                         ids=["grey", "rgb", "rgb --color rgb"])
def test_the_readme_command_fits_a_folder_of_8_bit_images(tmp_path, mode, color):
    """`pyrovae fit --data photos/ --image-size S` as the README writes it (plus a short run):
    8-bit images get the discretized logistic likelihood, and the test log-likelihood is a
    log-probability of the grey levels (negative, in nats), then `pyrovae sample` draws."""
    plain_folder(tmp_path / "photos", mode)
    done = pyrovae("fit", "--data", "photos/", "--image-size", "6", *color, "--epochs", "1", "--batch-size", "8",
                   "--eval-samples", "5", "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["name"] == "vae" and saved["model"]["options"]["likelihood"] == "logistic-mixture"
    line = next(t for t in done.stdout.splitlines() if t.startswith("test log-likelihood"))
    log_p = float(line.split(": ")[1].split()[0])
    pixels = 36 * (3 if mode == "RGB" else 1)
    assert -pixels * np.log(256) * 3 < log_p < 0, line  # a probability of discrete values, per image
    sampled = pyrovae("sample", "run", "--n", "4", cwd=tmp_path)
    assert sampled.returncode == 0 and (tmp_path / "run" / "samples-4-seed0.png").is_file(), sampled.stderr


def test_a_model_without_an_8_bit_likelihood_gets_a_density_on_0_1(tmp_path):
    """m2 has bernoulli and gaussian: on 8-bit images it gets gaussian, not a support error."""
    plain_folder(tmp_path / "photos", "L")
    done = pyrovae("fit", "--data", "photos", "--model", "m2", "--image-size", "4", "--epochs", "1",
                   "--batch-size", "8", "--eval-samples", "0", "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"]["options"]["likelihood"] == "gaussian"


def test_a_bernoulli_model_on_grey_images_names_the_flags_then_binarizes(tmp_path):
    """hvae has a Bernoulli likelihood only: on grey PNGs the error names CLI flags (that
    work), and `--binarize dynamic` fits; evaluate reads the same binary test rows."""
    plain_folder(tmp_path / "photos", "L")
    quick = ["--model", "hvae", "--image-size", "4", "--epochs", "1", "--batch-size", "8", "--eval-samples", "0",
             "--no-progress"]
    done = pyrovae("fit", "--data", "photos", *quick, "--out", "run", cwd=tmp_path)
    one_line_error(done, 2, "outside the support of its Bernoulli likelihood", "--binarize dynamic",
                   "--likelihood logistic-mixture")
    assert not (tmp_path / "run").exists()
    done = pyrovae("fit", "--data", "photos", *quick, "--binarize", "dynamic", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"]["binarize"] == "dynamic"
    scores = [pyrovae("evaluate", "run", "--num-samples", "5", "--json", "--force", cwd=tmp_path) for _ in range(2)]
    assert all(s.returncode == 0 for s in scores), scores[0].stderr
    assert json.loads(scores[0].stdout)["log_likelihood"] == json.loads(scores[1].stdout)["log_likelihood"]


def _unreadable(root):
    colour_folder(root / "photos", sizes=((10, 12),) * 2)
    (root / "photos" / "dogs" / "7.png").write_bytes(b"not a png")
    return ["photos", "--image-size", "8"], "photos/dogs/7.png", "cannot be read as an image"


def _mixed_sizes(root):
    colour_folder(root / "photos", sizes=((10, 12), (12, 12)))
    return ["photos"], "photos/cats/1.png is 12x12 but", "pass --image-size"


def _empty_folder(root):
    (root / "photos").mkdir()
    return ["photos"], "photos: the folder is empty", "PNG or JPEG"


def _nan_in_array(root):
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    x[17, 2] = np.nan
    np.save(root / "faces.npy", x)
    return ["faces.npy"], "faces.npy: row 17 holds NaN or inf values", "clean the array"


def _items_not_tensors(root):
    (root / "mydata.py").write_text(
        "import torch\n"
        "class Pairs(torch.utils.data.Dataset):\n"
        "    def __len__(self):\n        return 30\n"
        "    def __getitem__(self, i):\n        return torch.zeros(4), i\n"
        "def make():\n    return Pairs()\n")
    return ["mydata:make"], "mydata:make: item 0 of the data is a tuple (Tensor, int)", "a dict of tensors"


@pytest.mark.parametrize("case", [_unreadable, _mixed_sizes, _empty_folder, _nan_in_array, _items_not_tensors],
                         ids=["unreadable image", "mixed sizes", "empty folder", "NaN in an array",
                              "items not tensors"])
def test_bad_data_is_one_line_naming_the_file(tmp_path, case):
    data, *fragments = case(tmp_path)
    done = pyrovae("fit", "--data", *data, "--out", "run", *QUICK, cwd=tmp_path)
    one_line_error(done, 1, *fragments)
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_a_registered_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    from pyrovae.data.inputs import is_data_path

    (tmp_path / "digits").mkdir()
    np.save(tmp_path / "rows.npy", np.zeros((3, 2), np.float32))
    monkeypatch.chdir(tmp_path)
    assert not is_data_path("digits") and is_data_path("rows.npy") and is_data_path("digits/")
    assert is_data_path("mypackage.data:make_dataset") and not is_data_path("nope")


def test_an_unknown_name_is_one_line(tmp_path):
    one_line_error(pyrovae("fit", "--data", "nope", "--out", "x", cwd=tmp_path), 2, "unknown data set 'nope'",
                   "a folder of images, a .npy/.npz file or module:function")
