"""Turning the ``data`` argument of fit / log_likelihood into dicts of tensors.

``data`` may be a tensor (one datapoint per row, passed as ``x``), a dict of named
tensors, a :class:`~pyrovae.data.DataSet`, or a registered data set name.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from pyrovae.data.datasets import DataSet, load_dataset


def as_batch_dict(data, what: str = "data") -> Dict[str, torch.Tensor]:
    """A tensor or dict of tensors as a dict with equal leading sizes."""
    if isinstance(data, torch.Tensor):
        data = {"x": data}
    if not isinstance(data, dict) or not data:
        raise TypeError(
            f"{what} must be a tensor, a non-empty dict of tensors, a DataSet or a data set name; "
            f"got {type(data).__name__}"
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


def resolve_dataset(data, data_dir=None) -> Optional[DataSet]:
    """The DataSet behind ``data`` (loading it by name), or None for raw tensors."""
    if isinstance(data, DataSet):
        return data
    if isinstance(data, str):
        return load_dataset(data, data_dir=data_dir)
    return None


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def eval_split(data, split: str = "test", data_dir=None, device=None) -> Dict[str, torch.Tensor]:
    """The tensors to evaluate on: a data set's ``split``, or the given tensors."""
    dataset = resolve_dataset(data, data_dir)
    batch = as_batch_dict(getattr(dataset, split) if dataset is not None else data, what=split)
    return to_device(batch, device) if device is not None else batch
