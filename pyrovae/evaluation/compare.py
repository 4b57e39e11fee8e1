"""Paired comparison of two models' log-likelihood estimates on the same datapoints.

Two models scored on the same test images differ by much less than either estimate's
standard error over the images suggests: most of that spread is between images (a "1" is
easy for every model, a "8" hard for all). The difference taken image by image removes it:

.. math::
    d_n = \\log \\hat p_B(x_n) - \\log \\hat p_A(x_n), \\qquad
    \\bar d \\pm \\frac{s_d}{\\sqrt N},

the standard error of the mean difference over the N images. ``pyrovae compare`` prints it
for two ``pyrovae evaluate`` results; the benchmarks' "paired" columns are this.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

__all__ = ["PairedDifference", "data_fingerprint", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` datapoint by datapoint.

    :ivar float mean: mean of the per-datapoint differences (nats).
    :ivar float stderr: its standard error (sample standard deviation / sqrt(n)).
    :ivar float fraction_higher: share of datapoints where b's estimate is above a's.
    :ivar int n: number of datapoints.
    """

    mean: float
    stderr: float
    fraction_higher: float
    n: int

    def __str__(self) -> str:
        return (f"{self.mean:+.2f} ± {self.stderr:.2f} nats (higher on {100 * self.fraction_higher:.1f}% "
                f"of {self.n} datapoints)")

    def as_dict(self) -> dict:
        return {"mean": self.mean, "stderr": self.stderr, "fraction_higher": self.fraction_higher, "n": self.n}


def _values(x, name: str) -> np.ndarray:
    x = getattr(x, "per_datapoint", x)  # a LogLikelihood or AISEstimate
    if isinstance(x, torch.Tensor):
        x = x.detach().double().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected one value per datapoint (a 1-d array), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: {int((~np.isfinite(x)).sum())} of its {x.size} values are not finite")
    return x


def paired_difference(b, a) -> PairedDifference:
    """The paired difference ``b - a`` of two per-datapoint estimates of the same datapoints.

    :param b: per-datapoint values (a tensor, an array, a list, or an estimate with
        ``per_datapoint``, e.g. the result of :func:`~pyrovae.log_likelihood`).
    :param a: the reference, the same datapoints in the same order.
    :raises ValueError: different numbers of datapoints, fewer than two, or non-finite values.

    >>> print(paired_difference([-80.0, -90.0, -101.0], [-81.0, -91.0, -100.0]))
    +0.33 ± 0.67 nats (higher on 66.7% of 3 datapoints)
    """
    xb, xa = _values(b, "b"), _values(a, "a")
    if xb.shape != xa.shape:
        raise ValueError(f"the two estimates cover different numbers of datapoints ({xb.size} and {xa.size}); "
                         "score both models on the same datapoints (the same split and limit)")
    if xb.size < 2:
        raise ValueError("a paired standard error needs at least two datapoints")
    d = xb - xa
    return PairedDifference(mean=float(d.mean()), stderr=float(d.std(ddof=1) / math.sqrt(d.size)),
                            fraction_higher=float((d > 0).mean()), n=int(d.size))


def data_fingerprint(data: Mapping[str, torch.Tensor]) -> Optional[str]:
    """A SHA-1 of a batch of named tensors (names, dtypes, shapes and values), so that two
    results can be checked to score the same datapoints; None for data that is not a dict of
    tensors (a streamed Dataset)."""
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        return None
    digest = hashlib.sha1()
    for key in sorted(data):
        value = data[key].detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return digest.hexdigest()
