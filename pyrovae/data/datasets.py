"""
Data sets as dicts of tensors held whole on the training device.

A split is a dict of named tensors with one leading (row) dimension: ``"x"``, float32
``(N, D)`` images flattened, in :math:`[0, 1]`; ``"y"``, int64 ``(N,)`` labels where the
data has them. :func:`batches` slices a split into batch dicts that are passed to a model
and guide as keyword arguments. For a Bernoulli likelihood the images are binarized:
``"dynamic"`` redraws :math:`x \\sim \\mathrm{Bernoulli}(\\tilde x)` from the grey image
:math:`\\tilde x` for every training batch [1] (valid and test are drawn once, seed 0);
``"static"`` draws every split once [2]; ``"none"`` keeps the grey levels.
Files are found through :func:`search_paths`; nothing is ever downloaded.

References:

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519

[2] Larochelle, Murray. The Neural Autoregressive Distribution Estimator. AISTATS 2011
"""

import dataclasses
import gzip
import math
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pyrovae.errors import did_you_mean
from pyrovae.registry import DATASETS

__all__ = ["BINARIZE_CHOICES", "STANDARD_PLACES", "DataFormatError", "DataNotFoundError",
           "DataSet", "batches", "list_datasets", "load_dataset", "register_dataset",
           "search_paths"]

BINARIZE_CHOICES = ("dynamic", "static", "none")
#: Roots searched after ``data_dir`` and ``$PYROVAE_DATA``; ``~`` is expanded at lookup.
STANDARD_PLACES = ("~/.pyrovae/data", "~/data", "/usr/share/datasets")
_BINARIZE_SEED = 0
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801


class DataNotFoundError(FileNotFoundError):
    """The files of a data set are in none of the folders searched."""


class DataFormatError(ValueError):
    """A data file is malformed or truncated."""


@dataclasses.dataclass
class DataSet:
    """
    The train, valid and test splits of one data set, each a dict of tensors.

    :param str name: the registered name.
    :param dict train: ``{"x": (N, D) float32, "y": (N,) int64}``, ``"y"`` only where the
        data has labels. With ``binarize="dynamic"`` ``x`` holds grey levels and
        :meth:`transform` draws the binary image for each batch.
    :param dict valid: as ``train``, already binary unless ``binarize="none"``.
    :param dict test: as ``valid``.
    :param tuple image_shape: one image's shape, e.g. ``(28, 28)``; ``D`` is its product.
    :param str binarize: ``"dynamic"``, ``"static"`` or ``"none"``.
    :param int num_classes: the number of labels, ``None`` for unlabelled data.

    >>> load_dataset("digits").dims()
    {'x_dim': 64, 'num_classes': 10}
    """

    name: str
    train: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    image_shape: tuple[int, ...]
    binarize: str
    num_classes: int | None = None

    def __post_init__(self):
        _check_binarize(self.binarize)
        for split_name in ("train", "valid", "test"):
            shape = tuple(getattr(self, split_name)["x"].shape)
            if len(shape) != 2 or shape[1] != self.x_dim:
                raise ValueError(f"{self.name} {split_name}: x has shape {shape}, expected "
                                 f"(N, {self.x_dim}) for images of shape {self.image_shape}: flatten to (N, D), "
                                 f"one image per row")

    @property
    def x_dim(self) -> int:
        return math.prod(self.image_shape)

    @property
    def binary(self) -> bool:
        """Whether the data a model sees is in {0, 1}."""
        return self.binarize in ("dynamic", "static")

    def to(self, device) -> "DataSet":
        """A new :class:`DataSet` with every tensor moved to ``device``."""
        def move(split):
            return {key: value.to(device) for key, value in split.items()}
        return dataclasses.replace(self, train=move(self.train), valid=move(self.valid),
                                   test=move(self.test))

    def dims(self) -> dict:
        """The sizes to build a model or guide with: ``{"x_dim": D, "num_classes": C}``."""
        dims = {"x_dim": self.x_dim, "num_classes": self.num_classes}
        return {key: value for key, value in dims.items() if value is not None}

    def transform(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """
        Prepare a *training* batch: for ``binarize="dynamic"`` a new dict whose ``x`` is
        :math:`\\mathrm{Bernoulli}(x)`, drawn anew on every call [1]; otherwise ``batch``.

        :param dict batch: a batch from :func:`batches`.
        :param torch.Generator generator: optional, on the device of ``batch["x"]``.
        """
        return binarized_batch(batch, generator) if self.binarize == "dynamic" else batch


def binarized_batch(batch: dict, generator: torch.Generator | None = None) -> dict:
    """A new dict whose ``x`` is a draw :math:`\\mathrm{Bernoulli}(x)` of ``batch["x"]``."""
    x = batch["x"]
    # u < p with u ~ U(0, 1) is a Bernoulli(p) draw, and 2-3x cheaper than torch.bernoulli on a CPU
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return {**batch, "x": (u < x).to(x.dtype)}


def register_dataset(name: str):
    """
    Decorator registering ``loader(data_dir, binarize, valid_size) -> DataSet`` as ``name``
    for :func:`load_dataset`, in :data:`pyrovae.registry.DATASETS` (the registry of models,
    guides and objectives). ``binarize`` and ``valid_size`` are ``None`` for the data set's
    defaults; the loader returns tensors on the CPU.
    """
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """The registered data set names, sorted."""
    return DATASETS.names()


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, binarize: str | None = None,
                 device="cpu", valid_size: int | None = None) -> DataSet:
    """
    Load a registered data set whole onto ``device``.

    :param str name: one of :func:`list_datasets`; ``_`` may stand for ``-``.
    :param data_dir: the folder holding the files, the only one searched (see :func:`search_paths`).
    :param str binarize: ``"dynamic"``, ``"static"``, ``"none"``, or ``None`` for the default.
    :param device: where every tensor is put.
    :param int valid_size: rows of the training file held out for validation, or ``None``
        for the data set's default.
    :raises DataNotFoundError: if the files are in no folder searched.
    :raises DataFormatError: if a file is malformed.

    >>> data = load_dataset("digits", binarize="none")
    >>> [len(data.train["x"]), len(data.valid["x"]), len(data.test["x"])]
    [1200, 297, 300]
    """
    if name not in DATASETS:
        raise ValueError(unknown_data_message(name))
    if binarize is not None:
        _check_binarize(binarize)
    if valid_size is not None and (type(valid_size) is not int or valid_size < 0):
        raise ValueError(f"valid_size must be a non-negative int, got {valid_size!r}")
    return DATASETS.get(name)(data_dir, binarize, valid_size).to(device)


PATH_SUFFIXES = (".npy", ".npz", ".png", ".jpg", ".jpeg")


def unknown_data_message(name: str) -> str:
    """Why ``name`` names no data: a path that does not exist, or an unknown name (with the
    closest registered names, or all of them)."""
    text = str(name)
    if os.sep in text or "/" in text or text.startswith(("~", ".")) or text.lower().endswith(PATH_SUFFIXES):
        return (f"{text}: no such file or folder (nor a registered data set); check the path, or give a "
                "data set name (pyrovae list names them)")
    hint = did_you_mean(text.lower().replace("_", "-"), list_datasets())
    if hint:
        return f"unknown data set {text!r};{hint} (pyrovae list names them all)"
    return (f"unknown data set {text!r}; choose one of {list_datasets()}, or give a folder of images, a .npy/.npz "
            "file or module:function")


def _check_binarize(binarize):
    if binarize not in BINARIZE_CHOICES:
        raise ValueError(f"unknown binarize={binarize!r}; choose one of {list(BINARIZE_CHOICES)}")


def batches(split: dict[str, torch.Tensor], batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, transform=None,
            drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """
    Slice a split, already on its device, into batch dicts.

    Unshuffled batches are views ``x[i:i + batch_size]``. A shuffled pass draws one
    permutation on the CPU with ``generator`` (the same seed gives the same order on any
    device), moves it to the data's device once, and gathers each batch there with
    ``index_select``.

    :param dict split: named tensors on one device with one number of rows.
    :param int batch_size: rows per batch.
    :param bool shuffle: visit the rows in a random order.
    :param torch.Generator generator: a CPU generator for the permutation.
    :param callable transform: applied to each batch, e.g. :meth:`DataSet.transform`.
    :param bool drop_last: leave out a last batch smaller than ``batch_size``.

    >>> [len(batch["x"]) for batch in batches({"x": torch.zeros(5, 2)}, 2)]
    [2, 2, 1]
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    sizes = {key: len(value) for key, value in split.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"a split needs tensors with one common number of rows, got {sizes}")
    num_rows = next(iter(sizes.values()))
    stop = num_rows - num_rows % batch_size if drop_last else num_rows
    if shuffle:
        order = torch.randperm(num_rows, generator=generator)
        order = order.to(next(iter(split.values())).device)
    for start in range(0, stop, batch_size):
        if shuffle:
            index = order[start:start + batch_size]
            batch = {key: value.index_select(0, index) for key, value in split.items()}
        else:
            batch = {key: value[start:start + batch_size] for key, value in split.items()}
        yield batch if transform is None else transform(batch)


def search_paths(subdir: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """
    The folders searched for a data set's files, in order. The roots are ``data_dir`` alone
    when it is given; else each folder of ``$PYROVAE_DATA`` (``os.pathsep``-separated), then
    :data:`STANDARD_PLACES`; for each root, ``root/subdir`` then ``root`` itself.

    :param str subdir: the data set's folder name, e.g. ``"mnist"``.
    :param data_dir: the folder given by the user (``--data-dir``), searched alone.
    """
    if data_dir is not None:  # an explicit folder is the only one: no silent fallback to other data
        roots = [data_dir]
    else:
        roots = [root for root in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if root]
        roots += list(STANDARD_PLACES)
    paths = []
    for root in roots:
        root = Path(root).expanduser()
        paths += [path for path in (root / subdir, root) if path not in paths]
    return paths


def _find_files(subdir, layouts, data_dir, hint) -> dict[str, Path]:
    """The files of the first folder searched that holds a whole layout {key: names}."""
    searched = search_paths(subdir, data_dir)
    for folder in searched:
        for layout in layouts:
            found = {key: next((folder / name for name in names if (folder / name).is_file()),
                               None) for key, names in layout.items()}
            if all(found.values()):
                return found
    expected = "\n  or ".join(" + ".join(names[0] for names in layout.values())
                              for layout in layouts)
    folders = "\n".join(f"  {folder}" + ("" if folder.is_dir() else "  (no such folder)")
                        for folder in searched)
    raise DataNotFoundError(
        f"could not find the {subdir} files\n  {expected}\nSearched, in order:\n{folders}\n"
        f"Pass --data-dir (data_dir=...) or set PYROVAE_DATA to a folder holding them, or "
        f"holding a {subdir!r} folder with them. {hint}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """
    Read an IDX file of bytes (gzipped if named ``*.gz``): a big-endian uint32 ``magic``
    whose last byte is the number of dimensions, a uint32 per dimension, the data in C order.
    """
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as file:
            raw = file.read()
    except (OSError, EOFError) as error:  # a bad or truncated gzip stream
        raise DataFormatError(f"{path}: cannot be read: {error}") from error
    found = int.from_bytes(raw[:4], "big")
    if len(raw) < 4 or found != magic:
        raise DataFormatError(f"{path}: expected an IDX file with magic 0x{magic:08x}, found "
                              + (f"0x{found:08x}" if len(raw) >= 4 else f"{len(raw)} bytes"))
    header = 4 + 4 * (magic & 0xFF)
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated header: {len(raw)} of {header} bytes")
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(raw) != header + math.prod(shape):
        raise DataFormatError(f"{path}: dimensions {shape} need {header + math.prod(shape)} "
                              f"bytes but the file has {len(raw)}: truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _check_binary_rows(path: Path, array: np.ndarray) -> np.ndarray:
    """``array``, read from ``path``, as uint8 after checking it is (N, 784) zeros and ones."""
    if array.ndim != 2 or array.shape[1] != 784:
        raise DataFormatError(f"{path}: expected rows of 784 pixels, got shape {array.shape}")
    binary = (array <= 1).all() if array.dtype == np.uint8 else np.isin(array, (0, 1)).all()
    if not binary:
        raise DataFormatError(f"{path}: holds values other than 0 and 1")
    return array.astype(np.uint8, copy=False)


def _read_npz(path: Path, keys) -> dict[str, np.ndarray]:
    """Read the arrays ``keys`` of an ``.npz`` file, refusing pickled objects."""
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in keys}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataFormatError(f"{path}: expected an .npz of arrays {list(keys)} without "
                              f"pickled objects: {error}") from error
    return {key: _check_binary_rows(path, array) for key, array in arrays.items()}


def _read_amat(path: Path) -> np.ndarray:
    """Read a Larochelle ``.amat`` text file: rows of 784 space-separated 0/1."""
    try:
        array = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise DataFormatError(f"{path}: not rows of space-separated numbers: {error}") from error
    return _check_binary_rows(path, array)


def _split(pixels: np.ndarray, scale: float, labels: np.ndarray | None = None) -> dict:
    """A split from images ``(N, ...)`` divided by ``scale``, and optional labels ``(N,)``."""
    x = pixels.reshape(len(pixels), math.prod(pixels.shape[1:])).astype(np.float32)  # (N, D)
    split = {"x": torch.from_numpy(x).div_(scale)}
    if labels is not None:
        split["y"] = torch.from_numpy(labels.astype(np.int64))
    return split


def _binarize_splits(train, valid, test, binarize):
    """Binarize once, in place, seed 0; test first so its draw is the same for any valid size."""
    if binarize == "none":
        return
    generator = torch.Generator().manual_seed(_BINARIZE_SEED)
    for split in (test, valid, train) if binarize == "static" else (test, valid):
        split["x"] = torch.bernoulli(split["x"], generator=generator)


def _read_digits():
    """scikit-learn's 8x8 digits as ``load_digits(return_X_y=True)`` gives them (float64 pixels
    0..16, int labels), read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``,
    as its loader reads it) without importing scikit-learn: its import alone costs about a CPU
    second, and the digits are the default job's data."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError("the digits data set comes with scikit-learn, which is not installed: "
                                "pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn laid out otherwise: its own loader
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    with gzip.open(path) as file:
        table = np.loadtxt(file, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


@register_dataset("digits")
def _load_digits(data_dir, binarize, valid_size) -> DataSet:
    """scikit-learn's 8x8 digits (1797 images, 0..16): test 300, valid 297, train 1200."""
    images, labels = _read_digits()
    num_test, num_valid = 300, (297 if valid_size is None else valid_size)
    if num_test + num_valid >= len(labels):
        raise ValueError(f"valid_size={valid_size} leaves no training rows of digits' "
                         f"{len(labels) - num_test}")
    order = np.random.RandomState(0).permutation(len(labels))
    parts = np.split(order, [num_test, num_test + num_valid])  # test, valid, train
    test, valid, train = (_split(images[part], 16.0, labels[part]) for part in parts)
    binarize = binarize or "dynamic"
    _binarize_splits(train, valid, test, binarize)
    return DataSet("digits", train, valid, test, (8, 8), binarize, num_classes=10)


def _load_idx_dataset(name, data_dir, binarize, valid_size, hint) -> DataSet:
    """An MNIST-format data set: four IDX files; valid is the end of the training file."""
    names = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
    layout = {key: (file_name + ".gz", file_name) for key, file_name in names.items()}
    paths = _find_files(name, [layout], data_dir, "The names without .gz (un-gzipped) do too. "
                        + hint)
    arrays = {key: _read_idx(path, _IDX_IMAGES if key.endswith("_x") else _IDX_LABELS)
              for key, path in paths.items()}
    for part in ("train", "test"):
        if len(arrays[f"{part}_x"]) != len(arrays[f"{part}_y"]):
            raise DataFormatError(f"{paths[part + '_x']} has {len(arrays[part + '_x'])} images "
                                  f"but {paths[part + '_y']} {len(arrays[part + '_y'])} labels")
    image_shape = arrays["train_x"].shape[1:]
    if arrays["test_x"].shape[1:] != image_shape:
        raise DataFormatError(f"{paths['test_x']}: images differ in shape from the train file's")
    num_train = len(arrays["train_y"])
    cut = num_train - (10000 if valid_size is None else valid_size)
    if cut <= 0:
        raise ValueError(f"valid_size={valid_size} leaves no training rows of {name}'s {num_train}")
    train = _split(arrays["train_x"][:cut], 255.0, arrays["train_y"][:cut])
    valid = _split(arrays["train_x"][cut:], 255.0, arrays["train_y"][cut:])
    test = _split(arrays["test_x"], 255.0, arrays["test_y"])
    binarize = binarize or "dynamic"
    _binarize_splits(train, valid, test, binarize)
    return DataSet(name, train, valid, test, tuple(image_shape), binarize, num_classes=10)


@register_dataset("mnist")
def _load_mnist(data_dir, binarize, valid_size) -> DataSet:
    """MNIST (LeCun et al. 1998): 28x28 grey digits, 60000 train and 10000 test."""
    return _load_idx_dataset("mnist", data_dir, binarize, valid_size,
                             "They are the four files of http://yann.lecun.com/exdb/mnist/.")


@register_dataset("fashion-mnist")
def _load_fashion_mnist(data_dir, binarize, valid_size) -> DataSet:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey clothes in MNIST's format and sizes."""
    return _load_idx_dataset("fashion-mnist", data_dir, binarize, valid_size,
                             "On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` "
                             "puts them in /usr/share/datasets/fashion-mnist.")


@register_dataset("binarized-mnist")
def _load_binarized_mnist(data_dir, binarize, valid_size) -> DataSet:
    """Larochelle & Murray's statically binarized MNIST: 50000/10000/10000, no labels."""
    if binarize not in (None, "static"):
        raise ValueError(f"binarized-mnist is already binary (one fixed draw): binarize="
                         f"{binarize!r} cannot apply; load 'mnist' for that")
    if valid_size is not None:
        raise ValueError("binarized-mnist has a fixed split; leave valid_size unset")
    parts = ("train", "valid", "test")
    layouts = [{"npz": ("binarized_mnist.npz",)},
               {part: (f"binarized_mnist_{part}.amat",) for part in parts}]
    paths = _find_files("binarized_mnist", layouts, data_dir,
                        "They are Larochelle's binarized_mnist_{train,valid,test}.amat.")
    if "npz" in paths:
        arrays = _read_npz(paths["npz"], parts)
    else:
        arrays = {part: _read_amat(paths[part]) for part in parts}
    train, valid, test = (_split(arrays[part], 1.0) for part in parts)
    return DataSet("binarized-mnist", train, valid, test, (28, 28), "static")
