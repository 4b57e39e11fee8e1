"""Small network builders shared by models and guides."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_dim -> hidden_dims... -> out_dim``.

    :param int in_dim: input width.
    :param hidden_dims: widths of the hidden layers (may be empty: a linear map).
    :param int out_dim: output width.
    :param str activation: nonlinearity between layers (none after the last).

    >>> MLP(4, (8,), 2)(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "tanh"):
        dims = [in_dim, *hidden_dims]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), globals()["activation"](activation)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


def check_positive(**values) -> None:
    """Raise a ValueError naming any non-positive size argument."""
    for name, value in values.items():
        sizes = value if isinstance(value, (tuple, list)) else (value,)
        if any((not isinstance(v, int)) or v <= 0 for v in sizes):
            raise ValueError(f"{name} must be a positive integer (or tuple of them), got {value!r}")
