"""Data sets with each training row's position: ``digits-indexed`` and ``mnist-indexed``
(registered here, for ``--data``) are the digits and MNIST with an ``index`` column in the
training split, which a model that keeps a table of training codes (ACN, ``models/acn.py``)
reads to know which rows a batch holds; valid and test carry none.

>>> data = with_index(load_dataset("digits"))
>>> data.name, data.train["index"][:3].tolist(), "index" in data.valid
('digits-indexed', [0, 1, 2], False)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from pyrovae.data.datasets import DataSet, load_dataset, register_dataset

__all__ = ["with_index"]


def with_index(data: DataSet, name: Optional[str] = None) -> DataSet:
    """``data`` with ``index`` (each training row's position, int64) in its training split."""
    train = {**data.train, "index": torch.arange(len(data.train["x"]))}
    return dataclasses.replace(data, train=train, name=name or f"{data.name}-indexed")


@register_dataset("digits-indexed")
def _digits_indexed(data_dir, binarize, valid_size) -> DataSet:
    """scikit-learn's 8x8 digits with each training row's index (for models that keep a table: acn)."""
    return with_index(load_dataset("digits", data_dir=data_dir, binarize=binarize, valid_size=valid_size))


@register_dataset("mnist-indexed")
def _mnist_indexed(data_dir, binarize, valid_size) -> DataSet:
    """MNIST with each training row's index (for models that keep a table: acn)."""
    return with_index(load_dataset("mnist", data_dir=data_dir, binarize=binarize, valid_size=valid_size))
