"""
Batch sources: one interface over the data a pair is trained or evaluated on.

:func:`as_source` takes a dict of tensors, a map-style :class:`torch.utils.data.Dataset`,
an :class:`~torch.utils.data.IterableDataset` or a :class:`~torch.utils.data.DataLoader`
and returns a :class:`Source` whose :meth:`~Source.epoch_batches` yields batch dicts on the
device. A map-style Dataset small enough (estimated from its first item times its length,
against ``max_bytes``) is read once into tensors held on the device (``mode == "on-device"``);
otherwise it is streamed (``mode == "streamed"``): each batch is read when it is used, in the
same order as the on-device path, and copied to the device (pinned, non-blocking on CUDA).

The order of a shuffled epoch is ``torch.randperm(N, generator=torch.Generator().manual_seed(
seed * 1_000_003 + epoch))`` on both paths, so streamed and on-device runs see equal batches,
and ``start=k`` resumes an epoch at its batch ``k`` without reading the rows before it.

Sequences held as tensors (a ``"mask"`` ``(N, T)`` bool with a ``"lengths"`` ``(N,)`` beside it,
and likewise ``"source_mask"`` / ``"source_lengths"`` for a pair's sources) are padded to the
split's longest row; ``epoch_batches(..., cut=True)``, as fit's training loop asks, cuts each
batch to its own longest row (the last True of its rows' masks): the same rows in the same order,
with a recurrence run over no more steps than the batch needs (see :func:`padded_groups`).

>>> import torch
>>> source = as_source({"x": torch.rand(10, 3)}, "cpu")
>>> source.mode, source.num_batches(4), [len(b["x"]) for b in source.epoch_batches(4, shuffle=True, seed=0, epoch=0)]
('on-device', 3, [4, 4, 2])
"""

from __future__ import annotations

import itertools
import math
import os
import random
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pyrovae.data.batch import as_batch_dict
from pyrovae.errors import PyrovaeError

__all__ = ["DataError", "RowBatch", "Source", "TensorSource", "MapSource", "IterSource", "as_source",
           "epoch_order", "head", "padded_groups", "SEED_STRIDE", "MEMORY_FRACTION"]

#: A shuffled epoch's generator is seeded ``seed * SEED_STRIDE + epoch`` (as fit's loop does).
SEED_STRIDE = 1_000_003
#: The default ``max_bytes``: this fraction of the free RAM (CPU) or free device memory (CUDA).
MEMORY_FRACTION = 0.25
_MATERIALIZE_ROWS = 4096


class DataError(PyrovaeError, ValueError):
    """Data the user must fix (a bad file, an item that is not a tensor): the CLI exits 1."""


class RowBatch(dict):
    """A batch a dataset's ``__getitems__`` already stacked (``{"x": (B, D), ...}``); the
    collation passes it on as it is instead of stacking items."""


def epoch_order(num_rows: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The row order of one epoch: the permutation fit's tensor path draws, or ``arange``."""
    if not shuffle:
        return torch.arange(num_rows)
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * SEED_STRIDE + epoch))


def _type_name(item) -> str:
    if isinstance(item, (tuple, list)):
        return f"{type(item).__name__} ({', '.join(type(v).__name__ for v in item)})"
    if isinstance(item, dict):
        bad = {k: type(v).__name__ for k, v in item.items() if not isinstance(v, torch.Tensor)}
        return f"dict whose {', '.join(f'{k!r} is a {t}' for k, t in bad.items())}" if bad else "dict"
    return type(item).__name__


def as_item(item, index) -> dict:
    """One datapoint as a dict of tensors: a tensor is ``{"x": item}``; anything else but a
    non-empty dict of tensors raises a one-line :class:`DataError` naming its type and index."""
    if isinstance(item, torch.Tensor):
        return {"x": item}
    if isinstance(item, dict) and item and all(isinstance(v, torch.Tensor) for v in item.values()):
        return item
    raise DataError(f"item {index} of the data is a {_type_name(item)}; each item must be a tensor or a dict "
                    f"of tensors (the pair's keyword arguments, e.g. {{'x': image, 'y': label}}): wrap the "
                    f"dataset so that it returns one")


def _stack(items) -> dict:
    """The collation: stack a list of item dicts key by key (a :class:`RowBatch` passes)."""
    if isinstance(items, dict):
        return dict(items)
    keys = list(items[0])
    for item in items[1:]:
        if list(item) != keys:
            raise DataError(f"the data's items have different keys: {keys} and {list(item)}")
    return {key: torch.stack([item[key] for item in items]) for key in keys}


class _Items(Dataset):
    """A map-style dataset whose items are checked and turned into dicts of tensors."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return as_item(self.dataset[index], index)

    def __getitems__(self, indices):
        if hasattr(self.dataset, "__getitems__"):
            rows = self.dataset.__getitems__(indices)
            return rows if isinstance(rows, RowBatch) else [as_item(r, i) for r, i in zip(rows, indices)]
        return [self[index] for index in indices]


class _IterItems(IterableDataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return (as_item(item, index) for index, item in enumerate(self.dataset))


def _seed_worker(worker_id: int):
    """Seed numpy and random in a worker from torch's seed (drawn from the loader's generator)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _num_classes(dataset) -> int | None:
    """``dataset.num_classes`` or ``len(dataset.classes)``, looking through Subset-like wrappers."""
    while dataset is not None:
        if getattr(dataset, "num_classes", None) is not None:
            return int(dataset.num_classes)
        if getattr(dataset, "classes", None) is not None:
            return len(dataset.classes)
        dataset = getattr(dataset, "dataset", None)
    return None


def padded_groups(split: dict) -> list:
    """
    The padded time axes of a split of sequences, as ``(ends, keys)`` pairs: ``ends`` ``(N,)``
    (on the CPU) the steps up to each row's last real one (its mask's last True), ``keys`` the
    tensors whose second dimension is that axis. A group is a ``PREFIXmask`` ``(N, T)`` bool
    with a ``PREFIXlengths`` beside it; with ``PREFIX`` empty it holds the tensors of width
    ``T`` that belong to no other group (``x``, ``mask``, per-step labels), else those named
    ``PREFIX`` without its last ``_`` or starting with ``PREFIX`` (``source``, ``source_mask``).
    Empty for data without such a mask.

    >>> split = {"x": torch.zeros(2, 4, 3), "mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]).bool(),
    ...          "lengths": torch.tensor([2, 1])}
    >>> [(ends.tolist(), keys) for ends, keys in padded_groups(split)]
    [([2, 1], ['x', 'mask'])]
    """
    prefixes = [key[:-len("mask")] for key, mask in split.items()
                if key.endswith("mask") and isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
                and mask.dim() == 2 and key[:-len("mask")] + "lengths" in split]
    named = [prefix for prefix in prefixes if prefix]

    def group_of(key):
        for prefix in named:
            if key == prefix.rstrip("_") or key.startswith(prefix):
                return prefix
        return ""

    groups = []
    for prefix in prefixes:
        mask = split[prefix + "mask"]
        width = mask.shape[1]
        ends = (mask * torch.arange(1, width + 1, device=mask.device)).amax(1).cpu()
        keys = [key for key, value in split.items() if group_of(key) == prefix and isinstance(value, torch.Tensor)
                and value.dim() >= 2 and value.shape[1] == width]
        groups.append((ends, keys))
    return groups


def _cut(batch: dict, groups, index) -> dict:
    """``batch`` (the rows ``index``, a CPU tensor) cut to its own longest row in each group."""
    for ends, keys in groups:
        longest = max(int(ends[index].max()), 1)
        for key in keys:
            batch[key] = batch[key][:, :longest]
    return batch


class Source:
    """
    Batches of one split, on ``device``. Subclasses set ``mode`` (``"on-device"`` or
    ``"streamed"``), ``reason`` and ``num_rows`` (``None`` for an iterable without length).
    """

    mode: str
    reason: str
    num_rows: int | None
    device: torch.device
    num_classes: int | None = None

    def epoch_batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                      start: int = 0, cut: bool = False) -> Iterator[dict]:
        """Yield the batch dicts of one epoch on the device, from batch number ``start``; with
        ``cut``, padded sequences come cut to each batch's longest row (held tensors only)."""
        raise NotImplementedError

    def num_batches(self, batch_size: int) -> int | None:
        """The number of batches of an epoch (``None`` where the length is unknown)."""
        _check_batch_size(batch_size)
        return None if self.num_rows is None else math.ceil(self.num_rows / batch_size)

    def first_batch(self, batch_size: int) -> dict:
        """The first batch of an unshuffled epoch, for the checks before the first step."""
        batch = next(iter(self.epoch_batches(batch_size, shuffle=False)), None)
        if batch is None:
            raise DataError("the data yields no batch: it is empty")
        return batch

    def dims(self) -> dict:
        """``{"x_dim": D}`` from the width of the first datapoint's ``x``, with ``num_classes``
        where it is known: the dataset's ``num_classes`` or ``len(classes)`` attribute, or, for
        tensors, one more than the largest integer ``y``."""
        batch = self.first_batch(1)
        dims = {"x_dim": int(batch["x"].shape[-1])} if "x" in batch else {}
        if self.num_classes is not None:
            dims["num_classes"] = self.num_classes
        return dims

    def describe(self) -> str:
        """One line for the run log: the mode and why."""
        return f"data {self.mode}: {self.reason}"


def _check_batch_size(batch_size):
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


class TensorSource(Source):
    """Named tensors held whole on the device; batches are gathered there."""

    mode = "on-device"

    def __init__(self, split: dict, device, reason: str = "given as tensors", num_classes: int | None = None):
        self.device = torch.device(device)
        self.split = {key: value.to(self.device) for key, value in as_batch_dict(split).items()}
        self.num_rows = len(next(iter(self.split.values())))
        self.reason, self.num_classes = reason, num_classes
        self.groups = padded_groups(self.split)  # padded time axes, cut per batch with cut=True

    def epoch_batches(self, batch_size, *, shuffle=True, seed=0, epoch=0, start=0, cut=False):
        _check_batch_size(batch_size)
        order = epoch_order(self.num_rows, shuffle, seed, epoch)  # on the CPU: the cut needs no sync
        on_device = order.to(self.device) if shuffle else None
        groups = self.groups if cut else ()
        for begin in range(start * batch_size, self.num_rows, batch_size):
            if shuffle:
                index = on_device[begin:begin + batch_size]
                batch = {key: value.index_select(0, index) for key, value in self.split.items()}
            else:
                batch = {key: value[begin:begin + batch_size] for key, value in self.split.items()}
            yield _cut(batch, groups, order[begin:begin + batch_size]) if groups else batch


class _Streaming(Source):
    mode = "streamed"

    def __init__(self, device, num_workers, pin_memory, reason):
        self.device = torch.device(device)
        if type(num_workers) is not int or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
        self.num_workers = num_workers
        self.pin_memory = self.device.type == "cuda" and pin_memory is not False
        self.reason = reason

    def _loader_options(self, seed, epoch):
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory, "collate_fn": _stack,
                "worker_init_fn": _seed_worker,
                "generator": torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)}

    def _to_device(self, batch):
        return {key: value.to(self.device, non_blocking=self.pin_memory) for key, value in batch.items()}


class MapSource(_Streaming):
    """A map-style Dataset read batch by batch, in :func:`epoch_order`."""

    def __init__(self, dataset, device, num_workers=0, pin_memory=None, reason="streamed"):
        super().__init__(device, num_workers, pin_memory, reason)
        self.dataset, self.num_rows = _Items(dataset), len(dataset)
        self.num_classes = _num_classes(dataset)

    def epoch_batches(self, batch_size, *, shuffle=True, seed=0, epoch=0, start=0, cut=False):
        _check_batch_size(batch_size)
        order = epoch_order(self.num_rows, shuffle, seed, epoch)
        sampler = [order[i:i + batch_size].tolist() for i in range(start * batch_size, self.num_rows, batch_size)]
        if not sampler:
            return
        loader = DataLoader(self.dataset, batch_sampler=sampler, **self._loader_options(seed, epoch))
        for batch in loader:
            yield self._to_device(batch)


class IterSource(_Streaming):
    """An IterableDataset or a user's DataLoader, in its own order; ``start`` skips by iterating."""

    def __init__(self, data, device, num_workers=0, pin_memory=None, reason="streamed"):
        super().__init__(device, num_workers, pin_memory, reason)
        self.data = data
        self.is_loader = isinstance(data, DataLoader)
        dataset = data.dataset if self.is_loader else data
        try:
            self.num_rows = len(dataset)
        except TypeError:
            self.num_rows = None
        self.num_classes = _num_classes(dataset)
        if self.is_loader:
            self.pin_memory = self.pin_memory and data.pin_memory

    def num_batches(self, batch_size):
        if self.is_loader:  # the loader's own batch size
            try:
                return len(self.data)
            except TypeError:
                return None
        return super().num_batches(batch_size)

    def epoch_batches(self, batch_size, *, shuffle=True, seed=0, epoch=0, start=0, cut=False):
        _check_batch_size(batch_size)
        for owner in (self.data, getattr(self.data, "sampler", None), getattr(self.data, "dataset", None)):
            if hasattr(owner, "set_epoch"):  # e.g. DistributedSampler: its order depends on the epoch
                owner.set_epoch(epoch)
        if self.is_loader:
            batches = (_as_batch(batch, index) for index, batch in enumerate(self.data))
        else:
            batches = DataLoader(_IterItems(self.data), batch_size=batch_size, **self._loader_options(seed, epoch))
        for batch in itertools.islice(batches, start, None):
            yield self._to_device(batch)


def _as_batch(batch, index) -> dict:
    if isinstance(batch, torch.Tensor):
        return {"x": batch}
    if isinstance(batch, dict) and batch and all(isinstance(v, torch.Tensor) for v in batch.values()):
        return dict(batch)
    raise DataError(f"batch {index} of the DataLoader is a {_type_name(batch)}; it must be a tensor or a dict "
                    f"of tensors (the pair's keyword arguments): give the loader a collate_fn that returns one")


def head(data, n: Optional[int], device=None) -> Dict[str, torch.Tensor]:
    """The first ``n`` rows (all for None) of a dict of tensors, a Dataset, a DataLoader or a
    :class:`~pyrovae.data.sources.Source`, as a dict of tensors (read in order)."""
    if isinstance(data, (torch.Tensor, dict)):
        split = as_batch_dict(data)
        split = split if n is None else {k: v[:n] for k, v in split.items()}
        return {k: v.to(device) for k, v in split.items()} if device is not None else split
    source = data if isinstance(data, Source) else as_source(data, device or "cpu", max_bytes=0)
    if hasattr(source, "split"):
        split = source.split if n is None else {k: v[:n] for k, v in source.split.items()}
        return {k: v.to(device) for k, v in split.items()} if device is not None else split
    parts, rows = [], 0
    for batch in source.epoch_batches(min(n or 1024, 1024), shuffle=False):
        parts.append(batch)
        rows += len(next(iter(batch.values())))
        if n is not None and rows >= n:
            break
    split = {k: cat_padded([p[k] for p in parts])[:n] for k in parts[0]}
    return {k: v.to(device) for k, v in split.items()} if device is not None else split


def cat_padded(tensors) -> torch.Tensor:
    """The tensors joined along dimension 0, each first padded with zeros (``False``) at the end
    of its other dimensions to the largest size there: batches of sequences bucketed by length
    (``(N, T, D)`` with different T, their masks ``(N, T)``) as one padded batch.

    >>> cat_padded([torch.ones(1, 2), torch.ones(2, 3)]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        widths = []
        for d in reversed(range(1, t.dim())):
            widths += [0, shape[d - 1] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, widths) if any(widths) else t)
    return torch.cat(padded)


def default_max_bytes(device) -> int:
    """:data:`MEMORY_FRACTION` of the free device memory (CUDA) or of the available RAM (CPU);
    the environment variable ``PYROVAE_MAX_BYTES`` (bytes, ``0``: always stream) overrides it."""
    override = os.environ.get("PYROVAE_MAX_BYTES")
    if override:
        try:
            value = int(float(override))
        except ValueError:
            raise DataError(f"PYROVAE_MAX_BYTES={override!r} is not a number of bytes; unset it or give e.g. 0 "
                            "(always stream) or 2e9") from None
        if value < 0:
            raise DataError(f"PYROVAE_MAX_BYTES={override!r} is negative; give 0 (always stream) or more")
        return value
    device = torch.device(device)
    if device.type == "cuda":
        return int(MEMORY_FRACTION * torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        free = 4 * 2 ** 30
    return int(MEMORY_FRACTION * free)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _materialize(dataset, num_rows, num_workers) -> dict:
    """Every row of a map-style dataset, in order, as CPU tensors."""
    sampler = [list(range(i, min(i + _MATERIALIZE_ROWS, num_rows))) for i in range(0, num_rows, _MATERIALIZE_ROWS)]
    loader = DataLoader(_Items(dataset), batch_sampler=sampler, num_workers=num_workers, collate_fn=_stack,
                        worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(0))
    chunks = list(loader)
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


def as_source(data, device, *, num_workers: int = 0, pin_memory: bool | None = None,
              max_bytes: int | None = None) -> Source:
    """
    A :class:`Source` over ``data``.

    :param data: a tensor or dict of tensors (held on the device as given), a map-style
        ``Dataset`` (on the device if it fits, else streamed), an ``IterableDataset`` or a
        ``DataLoader`` (streamed in their own order). Items are tensors (passed as ``x``) or
        dicts of tensors.
    :param device: where the batches go.
    :param int num_workers: loader processes for streamed data (a user's DataLoader keeps its own).
    :param bool pin_memory: pin streamed batches before the copy; ``None``: on CUDA only.
    :param int max_bytes: the largest estimated size held on the device; ``None`` for
        :func:`default_max_bytes`, 0 to always stream a Dataset.
    :raises DataError: for an empty dataset or an item that is not a tensor or dict of tensors.
    """
    if isinstance(data, (torch.Tensor, dict)):
        split = as_batch_dict(data)
        y = split.get("y")  # integer labels 0..C-1 give num_classes C
        labelled = y is not None and y.dim() == 1 and not y.is_floating_point()
        return TensorSource(split, device, num_classes=int(y.max()) + 1 if labelled else None)
    if isinstance(data, DataLoader):
        return IterSource(data, device, 0, pin_memory, "a DataLoader is read as given (its batch size, order "
                                                       "and workers)")
    if isinstance(data, IterableDataset):
        return IterSource(data, device, num_workers, pin_memory, f"an IterableDataset is read as it comes "
                                                                 f"({num_workers} workers)")
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"data must be a tensor, a dict of tensors, a torch Dataset, an IterableDataset or a "
                        f"DataLoader; got {type(data).__name__}")
    num_rows = len(data)
    if num_rows == 0:
        raise DataError(f"the {type(data).__name__} is empty (length 0)")
    first = as_item(data[0], 0)
    estimate = num_rows * sum(v.numel() * v.element_size() for v in first.values())
    limit = default_max_bytes(device) if max_bytes is None else max_bytes
    size = f"{num_rows} rows, about {_bytes(estimate)}"
    if estimate <= limit:
        split = _materialize(data, num_rows, num_workers)
        return TensorSource(split, device, f"{size}, fit in {_bytes(limit)}: read once, held on {device}",
                            num_classes=_num_classes(data))
    return MapSource(data, device, num_workers, pin_memory,
                     f"{size}, above {_bytes(limit)}: read batch by batch ({num_workers} workers)")
