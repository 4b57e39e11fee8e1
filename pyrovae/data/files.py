"""
The user's own data from a path: a folder of images, an array file, or ``module:function``.

:func:`load_data_path` returns a :class:`UserData`: train, valid and test
:class:`~torch.utils.data.Dataset` s (read when used, not tensors), the image shape, the
model's sizes, and :meth:`UserData.describe`, the record run.json keeps so that evaluate and
resume can check with :func:`verify` that they read the same data.

Splits: a folder with ``train/`` (and ``valid/``, ``test/``) sub-folders, or an ``.npz``
with ``train`` (``valid``, ``test``) arrays, gives its own; a split it lacks (or every split,
for a plain folder, ``.npy`` or ``x`` array) is held out of the training data by
:func:`held_out_split`: the rows (files sorted by path) are permuted with
``numpy.random.RandomState(0)``; the first ``round(test_fraction * N)`` (at least 1) are test,
the next ``round(valid_fraction * N)`` (at least 1) valid, the rest train.

8-bit data (a folder of images, an array of ``uint8``) are ``x = k / 255`` for grey levels
``k``: :meth:`UserData.dims` says so with ``"likelihood": "logistic-mixture"``, which a model
with a ``likelihood`` option takes unless told otherwise (:func:`likelihood_for`; see
docs/data.md for why). ``binarize="dynamic"`` (``--binarize dynamic``) draws
:math:`x \\sim \\mathrm{Bernoulli}(\\tilde x)` from the grey levels for every training batch,
and valid and test once (each row from its own seed, so that a run reads the same binary rows
again); ``"static"`` draws the training rows once too.

>>> data = load_data_path("path/to/images", image_size=32)      # doctest: +SKIP
>>> data.dims(), data.describe()["checksum"]                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset

from pyrovae.data.arrays import ArrayDataset, MemoryRows, NpyRows, check_finite, read_npz
from pyrovae.data.datasets import BINARIZE_CHOICES, binarized_batch
from pyrovae.data.images import ImageFolderDataset, image_mode, scan_images
from pyrovae.data.sources import DataError, as_item, head

__all__ = ["DataChangedError", "EIGHT_BIT_LIKELIHOODS", "UserData", "held_out_split", "likelihood_for",
           "load_data_path", "verify", "checksum"]

SPLITS = ("train", "valid", "test")
#: the likelihoods for 8-bit data, best first: a probability over the 256 grey levels, then
#: densities on [0, 1] for a model that has no discrete one
EIGHT_BIT_LIKELIHOODS = ("logistic-mixture", "continuous_bernoulli", "gaussian")
_EDGE_BYTES = 2 ** 20


class DataChangedError(DataError):
    """The data at a path is not what a run read."""


def held_out_split(num_rows: int, valid_fraction: float, test_fraction: float, what: str,
                   need=("valid", "test")) -> dict[str, np.ndarray]:
    """Sorted row indices of the splits in ``need`` and ``"train"`` (the rest); see the module."""
    order = np.random.RandomState(0).permutation(num_rows)
    sizes = {"test": max(1, round(test_fraction * num_rows)), "valid": max(1, round(valid_fraction * num_rows))}
    parts, at = {}, 0
    for name in ("test", "valid"):
        if name in need:
            parts[name], at = order[at:at + sizes[name]], at + sizes[name]
    if at >= num_rows:
        raise DataError(f"{what} has {num_rows} datapoints: too few to hold out {' and '.join(need)} and keep "
                        f"training rows; add data or give the splits yourself")
    parts["train"] = order[at:]
    return {name: np.sort(rows) for name, rows in parts.items()}


def checksum(kind: str, path) -> str:
    """A folder: sha256 over its images' relative paths, sizes and mtimes; a file: over its size
    and its first and last MB; ``module:function``: over the module's source file."""
    digest = hashlib.sha256()
    if kind == "images":
        root = Path(path)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    else:
        file = Path(path) if kind == "array" else Path(_import(path)[0].__file__)
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            handle.seek(max(0, size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))
    return "sha256:" + digest.hexdigest()


@dataclasses.dataclass
class UserData:
    """
    A user's data set: Datasets per split, read when used.

    :param str name: the file or folder name.
    :param str kind: ``"images"``, ``"array"`` or ``"function"``.
    :param str path: the absolute path (or ``module:function``).
    :param train: a map-style or iterable Dataset; ``valid`` and ``test`` likewise or ``None``.
    :param tuple image_shape: one datapoint's shape before flattening.
    :param list classes: class names in label order, or ``None``.
    :param dict options: what the data was read with (image_size, color, fractions).
    """

    name: str
    kind: str
    path: str
    train: Dataset
    valid: Dataset | None
    test: Dataset | None
    image_shape: tuple
    num_classes: int | None = None
    classes: list | None = None
    binarize: str = "none"
    options: dict = dataclasses.field(default_factory=dict)
    device: object = None
    eight_bit: bool = False

    def to(self, device) -> "UserData":
        """This data set with ``device`` noted as where its batches go (nothing is read now)."""
        return dataclasses.replace(self, device=device)

    def rows(self, split: str, n: int | None = None) -> dict:
        """The first ``n`` rows (all for None) of ``split`` as tensors on :attr:`device`."""
        data = getattr(self, split)
        if data is None:
            raise DataError(f"{self.path}: has no {split} split")
        return head(data, n, self.device)

    @property
    def x_dim(self) -> int:
        return math.prod(self.image_shape)

    def dims(self) -> dict:
        """``{"x_dim": D, "num_classes": C}`` (``num_classes`` where there are labels), the
        ``image_shape`` of images (``(H, W)`` or ``(C, H, W)``: a convolutional model reads the
        rows so) and ``"likelihood": "logistic-mixture"`` for 8-bit data."""
        dims = {"x_dim": self.x_dim, "num_classes": self.num_classes,
                "image_shape": list(self.image_shape) if len(self.image_shape) > 1 else None,  # as run.json keeps it
                "likelihood": EIGHT_BIT_LIKELIHOODS[0] if self.eight_bit else None}
        return {key: value for key, value in dims.items() if value is not None}

    def transform(self, batch: dict, generator=None) -> dict:
        """The training batch: as it is, or for ``binarize="dynamic"`` a fresh binary draw."""
        return binarized_batch(batch, generator) if self.binarize == "dynamic" else batch

    def describe(self) -> dict:
        """What was read, for run.json: kind, path, counts, shape, classes, options, checksum."""
        count = {name: _length(getattr(self, name)) for name in SPLITS}
        return {"kind": self.kind, "path": self.path, "count": count, "shape": list(self.image_shape),
                "classes": self.classes, "options": self.options, "checksum": checksum(self.kind, self.path)}


def _length(dataset):
    try:
        return None if dataset is None else len(dataset)
    except TypeError:
        return None


def likelihood_for(factory, wanted: str | None) -> str | None:
    """The likelihood a model built by ``factory`` gets for data that want ``wanted``: that
    one if the model's ``likelihoods`` list it (or it lists none), else, for 8-bit data, the
    first of :data:`EIGHT_BIT_LIKELIHOODS` it has; None where it has none of them (its own
    default stays, and the first step names the problem).

    >>> from pyrovae.models import M2, VAE
    >>> likelihood_for(VAE, "logistic-mixture"), likelihood_for(M2, "logistic-mixture")
    ('logistic-mixture', 'gaussian')
    """
    supported = getattr(factory, "likelihoods", None)
    if wanted is None or supported is None or wanted in supported:
        return wanted
    candidates = EIGHT_BIT_LIKELIHOODS if wanted in EIGHT_BIT_LIKELIHOODS else ()
    return next((name for name in candidates if name in supported), None)


def verify(described: dict) -> None:
    """Raise :class:`DataChangedError` if the data described by :meth:`UserData.describe`
    (read back from run.json) has changed since."""
    kind, path = described["kind"], described["path"]
    if kind in ("images", "array") and not Path(path).exists():
        raise DataChangedError(f"{path}: the run's data is gone (it was read from there); restore it")
    now = checksum(kind, path)
    if now != described["checksum"]:
        what = "files, sizes or times" if kind == "images" else "contents"
        raise DataChangedError(f"{path}: the data changed since the run read it ({what}: checksum "
                               f"{described['checksum'][:19]} then, {now[:19]} now); restore it or start a new run")


def load_data_path(spec: str, *, image_size=None, color: str | None = None, valid_fraction: float = 0.1,
                   test_fraction: float = 0.1, check_finite_values: bool = True, binarize: str = "none") -> UserData:
    """
    Read a folder of images, a ``.npy``/``.npz`` file or ``module:function`` as a :class:`UserData`.

    :param str spec: the path, or ``module:function`` (or ``path/to/file.py:function``) returning a
        Dataset or a dict of Datasets ``{"train": ..., "valid": ..., "test": ...}``.
    :param image_size: resize and center-crop images to ``S x S`` (int) or ``(H, W)``.
    :param str color: ``None`` (grey if every image is grey, else RGB), ``"grey"`` or ``"rgb"``.
    :param float valid_fraction: the share of rows held out for valid where no split is given.
    :param float test_fraction: likewise for test.
    :param bool check_finite_values: scan an array file for NaN/inf (in chunks).
    :param str binarize: ``"none"``, ``"dynamic"`` or ``"static"`` (see the module).
    :raises DataError: one line naming the file for unreadable or unusable data.

    An IterableDataset from ``module:function`` cannot be split: give its valid and test.
    """
    for name, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction!r}")
    if binarize not in BINARIZE_CHOICES:
        raise ValueError(f"unknown binarize={binarize!r}; choose one of {BINARIZE_CHOICES}")
    data = _load(spec, image_size, color, valid_fraction, test_fraction, check_finite_values)
    return data if binarize == "none" else _binarized(data, binarize)


def _load(spec, image_size, color, valid_fraction, test_fraction, check_finite_values) -> UserData:
    fractions = {"valid_fraction": valid_fraction, "test_fraction": test_fraction}
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_images(path.resolve(), image_size, color, fractions)
    if path.is_file() and path.suffix in (".npy", ".npz"):
        return _load_array(path.resolve(), fractions, check_finite_values)
    if path.exists():
        raise DataError(f"{spec}: not a folder of images, a .npy or .npz file, nor module:function")
    if ":" in spec and spec.rsplit(":", 1)[1].isidentifier():
        return _load_function(spec, fractions)
    raise DataError(f"{spec}: no such file or folder (expected a folder of images, a .npy/.npz file or "
                    f"module:function)")


class BinarizedRows(Dataset):
    """The items of a map-style ``dataset`` with ``x`` drawn once as Bernoulli(x): row ``i``
    from its own generator seeded ``(seed, i)``, so that every read gives the same binary row."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.num_classes = getattr(dataset, "num_classes", None)
        self.classes = getattr(dataset, "classes", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = as_item(self.dataset[index], index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        return binarized_batch(item, generator)


def _binarized(data: UserData, binarize: str) -> UserData:
    """``data`` with valid and test (and train, for ``"static"``) binarized once, row by row."""
    splits = {}
    for seed, name in enumerate(SPLITS):
        split = getattr(data, name)
        if split is None or (name == "train" and binarize == "dynamic"):
            splits[name] = split
        elif isinstance(split, IterableDataset):
            raise DataError(f"{data.path}: its {name} split is an iterable Dataset, which cannot be binarized row by "
                            f"row; binarize its items yourself or drop --binarize")
        else:
            splits[name] = BinarizedRows(split, seed)
    return dataclasses.replace(data, **splits, binarize=binarize, eight_bit=False)


def _load_images(root, image_size, color, fractions) -> UserData:
    given = [name for name in SPLITS if (root / name).is_dir()]
    if given and "train" not in given:
        raise DataError(f"{root}: has {'/'.join(given)}/ but no train/ folder; add train/ or use a flat folder")
    scans = {name: scan_images(root / name) for name in given} if given else {"train": scan_images(root)}
    classes = [scan[2] for scan in scans.values()]
    if any(c is not None for c in classes) and len({tuple(c or ()) for c in classes}) > 1:
        raise DataError(f"{root}: the splits' class folders differ ({', '.join(map(str, classes))}); give each "
                        f"split the same class folders")
    classes = classes[0]
    mode, shape = image_mode([f for scan in scans.values() for f in scan[0]], image_size, color)
    datasets = {}
    missing = [name for name in ("valid", "test") if name not in scans]
    files, labels, _ = scans["train"]
    parts = held_out_split(len(files), **fractions, what=str(root), need=missing) if missing else {}
    for name in SPLITS:
        if name in parts:
            chosen = parts[name]
            split_files = [files[i] for i in chosen]
            split_labels = None if labels is None else [labels[i] for i in chosen]
        else:
            split_files, split_labels, _ = scans[name]
        datasets[name] = ImageFolderDataset(split_files, split_labels, classes, mode, shape, image_size is not None)
    options = {"image_size": image_size, "color": "grey" if mode == "L" else "rgb",
               "splits": "folders" if given else "held out", **fractions}
    return UserData(root.name, "images", str(root), datasets["train"], datasets["valid"], datasets["test"],
                    datasets["train"].image_shape, datasets["train"].num_classes, classes, options=options,
                    eight_bit=True)  # read_image gives k / 255


def _load_array(path, fractions, check) -> UserData:
    if path.suffix == ".npy":
        arrays = {"x": NpyRows(path)}
        labels = {}
    else:
        raw = read_npz(path)
        keys = set(raw)
        if "x" in keys:
            arrays, labels = {"x": MemoryRows(raw["x"])}, ({"x": raw["y"]} if "y" in keys else {})
        elif "train" in keys:
            arrays = {name: MemoryRows(raw[name]) for name in SPLITS if name in keys}
            labels = {name: raw[f"y_{name}"] for name in arrays if f"y_{name}" in keys}
        else:
            raise DataError(f"{path}: has arrays {sorted(keys)}; expected x (and y), or train, valid, test (and "
                            f"y_train, y_valid, y_test)")
    for name, rows in arrays.items():
        if check:  # floats only; reads about 32 MB at a time
            check_finite(path if name == "x" else f"{path} [{name}]", rows)
    shapes = {rows.shape[1:] for rows in arrays.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' rows differ in shape: {sorted(shapes)}")
    first = next(iter(arrays))
    datasets = {name: ArrayDataset(path, rows, labels.get(name)) for name, rows in arrays.items()}
    missing = [name for name in ("valid", "test") if name not in datasets]
    if missing:
        parts = held_out_split(len(arrays[first]), **fractions, what=str(path), need=missing)
        for name, indices in parts.items():
            datasets[name] = ArrayDataset(path, arrays[first], labels.get(first), indices)
    train = datasets["train"]
    num_classes = max(d.num_classes for d in datasets.values() if d.labels is not None) if labels else None
    options = {"splits": "held out" if first == "x" else "arrays", **fractions}
    return UserData(path.name, "array", str(path), train, datasets.get("valid"), datasets.get("test"),
                    train.image_shape, num_classes, options=options,
                    eight_bit=all(rows.dtype == np.uint8 for rows in arrays.values()))


def _import(spec: str):
    module_name, function_name = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).resolve()
            loader_spec = importlib.util.spec_from_file_location(file.stem, file)
            if loader_spec is None or not file.is_file():
                raise ImportError(f"no file {file}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` does
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise DataError(f"{spec}: cannot import {module_name}: {error}") from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DataError(f"{spec}: {module_name} has no function {function_name}")
    return module, function


def _load_function(spec, fractions) -> UserData:
    _, function = _import(spec)
    made = function()
    if isinstance(made, dict) and "train" in made:
        datasets = {name: made.get(name) for name in SPLITS}
    elif isinstance(made, Dataset):
        datasets = {"train": made, "valid": None, "test": None}
    else:
        raise DataError(f"{spec}: returned a {type(made).__name__}; return a torch Dataset or a dict "
                        f"{{'train': Dataset, 'valid': ..., 'test': ...}}")
    train = original = datasets["train"]
    missing = [name for name in ("valid", "test") if datasets[name] is None]
    if missing and not isinstance(train, IterableDataset):
        parts = held_out_split(len(train), **fractions, what=spec, need=missing)
        datasets.update({name: Subset(train, indices.tolist()) for name, indices in parts.items()})
        datasets["train"] = Subset(train, parts["train"].tolist())
    try:
        first = as_item(next(iter(train)) if isinstance(train, IterableDataset) else train[0], 0)
    except DataError as error:  # name the function the items came from
        raise DataError(f"{spec}: {error}") from None
    image_shape = tuple(getattr(original, "image_shape", None) or first["x"].shape[-1:]) if "x" in first else ()
    classes = getattr(original, "classes", None)
    num_classes = getattr(original, "num_classes", None) or (len(classes) if classes is not None else None)
    options = {"splits": "held out" if missing else "given", **fractions}
    return UserData(spec, "function", spec, datasets["train"], datasets["valid"], datasets["test"], image_shape,
                    num_classes, classes, options=options)
