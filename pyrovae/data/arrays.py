"""
Array files as Datasets: ``.npy`` (read row by row from the file, so a file larger than the
RAM streams) and ``.npz``.

Rows are datapoints; the other dimensions are one image, flattened to ``x`` with its shape
kept as ``image_shape``. ``uint8`` values are divided by 255, ``bool`` become 0/1, floats are
cast to float32; NaN or inf raise a :class:`~pyrovae.data.sources.DataError` naming the file
(checked in chunks, never the whole file at once).

A ``.npy`` file's header is read with ``np.load(path, mmap_mode="r")``; its rows are then read
with ``os.pread`` rather than through the memory map, so pages read for one batch are not
left mapped in the process (a pass over a 2 GB file keeps the resident memory small).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pyrovae.data.sources import DataError, RowBatch

__all__ = ["ArrayDataset", "NpyRows", "MemoryRows", "read_npz", "check_finite"]

_CHECK_BYTES = 32 * 2 ** 20  # rows read at a time by check_finite


class NpyRows:
    """Rows of a ``.npy`` file read on demand. ``shape``, ``dtype`` as the array's."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            array = np.load(self.path, mmap_mode="r")  # reads the header only
        except (ValueError, OSError) as error:
            raise DataError(f"{self.path}: not a readable .npy array of numbers: {error}") from error
        if array.ndim == 0:
            raise DataError(f"{self.path}: holds a scalar; save one datapoint per row")
        if array.ndim > 1 and not array.flags.c_contiguous:
            raise DataError(f"{self.path}: is in Fortran order; save it in C order (np.ascontiguousarray)")
        self.shape, self.dtype, self.offset = array.shape, array.dtype, int(array.offset)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        del array
        self._fd, self._pid = None, None

    def __len__(self):
        return self.shape[0]

    def _file(self):
        if self._pid != os.getpid():  # one descriptor per process (loader workers fork)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order), shape ``(len(rows), *shape[1:])``; runs of
        consecutive rows are read with one call each."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return self._read_run(int(rows[0]), len(rows))  # one contiguous block: no copy
        unique, inverse = np.unique(rows, return_inverse=True)
        out = bytearray(len(unique) * self.row_bytes)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        fd, at = self._file(), 0
        for run in np.split(unique, breaks) if len(unique) else []:
            size = len(run) * self.row_bytes
            data = os.pread(fd, size, self.offset + int(run[0]) * self.row_bytes)
            if len(data) != size:
                raise DataError(f"{self.path}: truncated: row {int(run[0])} onward is missing")
            out[at:at + size] = data
            at += size
        block = np.frombuffer(out, dtype=self.dtype).reshape((len(unique),) + self.shape[1:])
        return block[inverse]

    def _read_run(self, first: int, count: int) -> np.ndarray:
        size = count * self.row_bytes
        data = os.pread(self._file(), size, self.offset + first * self.row_bytes)
        if len(data) != size:
            raise DataError(f"{self.path}: truncated: row {first} onward is missing")
        return np.frombuffer(data, dtype=self.dtype).reshape((count,) + self.shape[1:])

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}


class MemoryRows:
    """Rows of an array held in memory, with :class:`NpyRows`' interface."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __len__(self):
        return self.shape[0]

    def read(self, rows):
        return self.array[np.asarray(rows, dtype=np.int64)]


def _check_dtype(path, dtype, what="x"):
    if not (dtype == np.uint8 or dtype == np.bool_ or np.issubdtype(dtype, np.floating)):
        raise DataError(f"{path}: {what} has dtype {dtype}; save float (values in [0, 1] for images) or "
                        f"uint8 (0..255)")


def check_finite(path, rows) -> None:
    """Raise a :class:`DataError` naming ``path`` and the first row holding NaN or inf; reads
    ``rows`` (a :class:`NpyRows` or :class:`MemoryRows`) about 32 MB at a time."""
    if not np.issubdtype(rows.dtype, np.floating):
        return
    step = max(1, _CHECK_BYTES // max(1, math.prod(rows.shape[1:]) * rows.dtype.itemsize))
    for begin in range(0, len(rows), step):
        chunk = rows.read(np.arange(begin, min(begin + step, len(rows))))
        finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if not finite.all():
            bad = begin + int(np.argmin(finite))
            raise DataError(f"{path}: row {bad} holds NaN or inf values; clean the array first")


def read_npz(path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, loaded into memory without pickled objects."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz of numeric arrays: {error}") from error


class ArrayDataset(Dataset):
    """
    Rows ``indices`` of an array as items ``{"x": (D,) float32, "y": () int64}``.

    :param path: the file, for messages.
    :param rows: a :class:`NpyRows` or :class:`MemoryRows` of shape ``(N, *image_shape)``.
    :param numpy.ndarray labels: optional ``(N,)`` integer labels.
    :param numpy.ndarray indices: the rows of this split (default all), sorted.
    """

    def __init__(self, path, rows, labels=None, indices=None):
        self.path, self.rows = Path(path), rows
        _check_dtype(self.path, rows.dtype)
        self.image_shape = tuple(int(s) for s in rows.shape[1:]) or (1,)
        if labels is not None:
            if labels.shape != (len(rows),) or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"{self.path}: labels must be integers of shape ({len(rows)},), got "
                                f"{labels.dtype} {labels.shape}")
            self.num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.labels = labels
        self.indices = np.arange(len(rows)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def _x(self, block: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(block).reshape(len(block), -1).astype(np.float32))
        return x.div_(255.0) if self.rows.dtype == np.uint8 else x

    def __getitems__(self, positions) -> RowBatch:
        """A whole batch read at once: ``{"x": (B, D), "y": (B,)}``."""
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        batch = RowBatch(x=self._x(self.rows.read(rows)))
        if self.labels is not None:
            batch["y"] = torch.from_numpy(self.labels[rows].astype(np.int64))
        return batch

    def __getitem__(self, position):
        if not -len(self) <= position < len(self):
            raise IndexError(f"row {position} of {len(self)}")
        batch = self.__getitems__([position])
        return {key: value[0] for key, value in batch.items()}
