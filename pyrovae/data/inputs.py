"""Turning the ``data`` argument of fit / log_likelihood into dicts of tensors or batch sources.

``data`` may be a tensor (one datapoint per row, passed as ``x``), a dict of named
tensors, a :class:`~pyrovae.data.DataSet`, a registered data set name, a path (a folder of
images, a ``.npy``/``.npz`` file) or ``module:function`` (read by
:func:`~pyrovae.data.files.load_data_path` as a :class:`~pyrovae.data.files.UserData`), a
torch ``Dataset`` / ``IterableDataset`` or a ``DataLoader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from pyrovae.data.datasets import DataSet, list_datasets, load_dataset


def as_batch_dict(data, what: str = "data") -> Dict[str, torch.Tensor]:
    """A tensor or dict of tensors as a dict with equal leading sizes."""
    if isinstance(data, torch.Tensor):
        data = {"x": data}
    if not isinstance(data, dict) or not data:
        raise TypeError(
            f"{what} must be a tensor, a non-empty dict of tensors, a DataSet, a data set name, a torch Dataset "
            f"or a DataLoader; got {type(data).__name__}"
        )
    sizes = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0:
            raise ValueError(f"{what}[{key!r}] is a scalar; give one datapoint per row")
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{what}'s tensors must have the same number of rows; got {sizes}")
    if next(iter(sizes.values())) == 0:
        raise ValueError(f"{what} is empty (0 rows)")
    for key, value in data.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{what}[{key!r}] contains NaN or inf values; clean the data first")
    return data


def is_data_path(spec: str) -> bool:
    """Whether ``spec`` names the user's data rather than a registered data set: a registered
    name wins; else a path that exists, or ``module:function``."""
    if spec in list_datasets():
        return False
    if Path(spec).expanduser().exists():
        return True
    return ":" in spec and spec.rsplit(":", 1)[1].isidentifier()


def resolve_dataset(data, data_dir=None, **path_options):
    """The :class:`DataSet` or :class:`~pyrovae.data.files.UserData` behind ``data`` (loading
    a name, a path or ``module:function``), or None for tensors, Datasets and DataLoaders.

    :param path_options: passed to :func:`~pyrovae.data.files.load_data_path` for a path
        (``image_size``, ``color``, ...).
    """
    from pyrovae.data.files import UserData, load_data_path

    if isinstance(data, (DataSet, UserData)):
        return data
    if isinstance(data, Path):
        data = str(data)
    if isinstance(data, str):
        if is_data_path(data):
            return load_data_path(data, **path_options)
        return load_dataset(data, data_dir=data_dir)
    return None


def is_tensor_data(data) -> bool:
    return isinstance(data, (torch.Tensor, dict))


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def head(data, n: Optional[int], device=None) -> Dict[str, torch.Tensor]:
    """The first ``n`` rows (all for None) of a dict of tensors, a Dataset, a DataLoader or a
    :class:`~pyrovae.data.sources.Source`, as a dict of tensors (read in order)."""
    from pyrovae.data.sources import Source, as_source

    if is_tensor_data(data):
        split = as_batch_dict(data)
        split = split if n is None else {k: v[:n] for k, v in split.items()}
        return to_device(split, device) if device is not None else split
    source = data if isinstance(data, Source) else as_source(data, device or "cpu", max_bytes=0)
    if hasattr(source, "split"):
        split = source.split if n is None else {k: v[:n] for k, v in source.split.items()}
        return to_device(split, device) if device is not None else split
    parts, rows = [], 0
    for batch in source.epoch_batches(min(n or 1024, 1024), shuffle=False):
        parts.append(batch)
        rows += len(next(iter(batch.values())))
        if n is not None and rows >= n:
            break
    split = {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}
    return to_device(split, device) if device is not None else split


def eval_split(data, split: str = "test", data_dir=None, device=None) -> Dict[str, torch.Tensor]:
    """The tensors to evaluate on: a data set's ``split``, or the given tensors (a Dataset or
    DataLoader is read whole into tensors)."""
    dataset = resolve_dataset(data, data_dir)
    chosen = getattr(dataset, split) if dataset is not None else data
    if chosen is None:
        raise ValueError(f"the data has no {split} split")
    if not is_tensor_data(chosen):
        return head(chosen, None, device)
    batch = as_batch_dict(chosen, what=split)
    return to_device(batch, device) if device is not None else batch
