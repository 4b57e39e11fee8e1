"""The batch dict: named tensors with one leading (row) dimension, checked.

Kept apart from :mod:`pyrovae.data.inputs` (which reads paths through
:mod:`pyrovae.data.files`) so that :mod:`pyrovae.data.sources` can use it without an import cycle.
"""

from __future__ import annotations

from typing import Dict

import torch


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
