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

from pyrovae.data.batch import as_batch_dict
from pyrovae.data.datasets import DataSet, list_datasets, load_dataset
from pyrovae.data.sources import head

__all__ = ["as_batch_dict", "eval_split", "head", "is_data_path", "is_tensor_data", "resolve_dataset", "to_device"]


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
