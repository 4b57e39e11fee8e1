"""The score a fit prints at its end, within a time budget.

Scoring every test image with K importance samples can take many times the training of a
short fit (DRAW on MNIST: 121 s of training, then about 700 s of K=100 score). The end-of-fit
score therefore times a first chunk of test images, then chooses how many images (and, if
even :data:`MIN_DATAPOINTS` images would not fit, a smaller K) the budget allows:

1. the test rows are put in a random order fixed by ``seed`` (any prefix is then a uniform
   random subset; the rows of ``binarized-mnist`` are grouped by digit, so the first N
   would not be);
2. the first chunk (one pass: :data:`CHUNK_PAIRS` particle-datapoint pairs) is scored and
   timed, giving seconds per particle-datapoint pair;
3. :func:`plan` gives ``(n, K)``: every image at the asked K if that fits the budget, else
   as many images as fit at that K (at least :data:`MIN_DATAPOINTS`); where even those do not
   fit, the first chunk's images alone at the asked K if they are at least
   :data:`MIN_KEPT` (K = 100: 50 images; their time is spent already, and a smaller random
   subset only widens the standard error, where a smaller K would lower the estimate itself,
   and saves little time where K's particles run as one batch, as in the recurrent models),
   else :data:`MIN_DATAPOINTS` images at the K that fits;
4. the rest of the n images is scored (the chunk's scores kept when K is unchanged), and the
   per-datapoint values are put back in the rows' order.

The full score, every image at K = 5000, is ``pyrovae evaluate RUN``.

>>> plan(seconds_per_pair=1e-5, total=10000, num_samples=100, budget=30.0)
(10000, 100)
>>> plan(seconds_per_pair=7e-4, total=10000, num_samples=100, budget=30.0)
(428, 100)
>>> plan(seconds_per_pair=1e-2, total=10000, num_samples=100, budget=30.0)
(100, 30)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from pyrovae.data.sources import head
from pyrovae.evaluation.log_likelihood import LogLikelihood, estimate
from pyrovae.infer.importance import batch_size_of, mean_and_stderr

__all__ = ["BoundedScore", "MIN_DATAPOINTS", "MIN_KEPT", "bounded_log_likelihood", "datapoint_noun", "plan", "rows_of"]

MIN_DATAPOINTS = 100  # fewer images than this: K is lowered instead, unless the first chunk holds MIN_KEPT
MIN_KEPT = 25  # a first chunk of at least this many images is kept at the asked K rather than lowering K
CHUNK_PAIRS = 5000  # particle-datapoint pairs in the timed first chunk (one pass on a CPU)
STREAMED_ROWS = 10000  # an iterable Dataset: the score draws from its first rows


@dataclass
class BoundedScore:
    """An importance-sampled score of ``num_datapoints`` of ``of_datapoints`` test rows.

    :ivar LogLikelihood estimate: the estimate over the rows scored (K: ``estimate.num_samples``).
    :ivar torch.Tensor rows: the indices of the rows scored, in increasing order.
    :ivar int of_datapoints: the rows of the split.
    :ivar int requested_num_samples: the K asked for.
    :ivar float seconds: the time the score took, the first chunk included.
    :ivar float budget: the seconds it was allowed.
    :ivar str noun: what a test row is, for :meth:`describe` (:func:`datapoint_noun`).
    """

    estimate: LogLikelihood
    rows: torch.Tensor
    of_datapoints: int
    requested_num_samples: int
    seconds: float
    budget: float
    noun: str = "images"

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.of_datapoints

    def describe(self) -> str:
        """``all 300 test images`` or ``428 of 10000 test images (a random subset)``, and
        ``, K lowered from 100 to fit the time`` where it was."""
        images = (f"all {self.of_datapoints}" if self.complete else
                  f"{len(self.rows)} of {self.of_datapoints}") + f" test {self.noun}"
        subset = "" if self.complete else " (a random subset)"
        k = self.estimate.num_samples
        lowered = f", K lowered from {self.requested_num_samples} to fit the time" \
            if k != self.requested_num_samples else ""
        return images + subset + lowered

    def as_dict(self) -> dict:
        return {**self.estimate.as_dict(), "of_datapoints": self.of_datapoints,
                "requested_num_samples": self.requested_num_samples, "subset": "all" if self.complete else "random",
                "seconds": self.seconds, "budget_seconds": self.budget}


def datapoint_noun(dataset) -> str:
    """What one test row of ``dataset`` is, for the printed score: ``sequences`` (rows with
    ``lengths``), ``sets`` (with ``sizes``), ``images`` (an image shape of two or more
    dimensions), else ``datapoints``.

    >>> class Chorales:
    ...     image_shape, test = (88,), {"x": None, "mask": None, "lengths": None}
    >>> datapoint_noun(Chorales()), datapoint_noun(None)
    ('sequences', 'datapoints')
    """
    test = getattr(dataset, "test", None)
    keys = test.keys() if isinstance(test, dict) else ()
    if "lengths" in keys:
        return "sequences"
    if "sizes" in keys:
        return "sets"
    return "images" if len(getattr(dataset, "image_shape", None) or ()) >= 2 else "datapoints"


def plan(seconds_per_pair: float, total: int, num_samples: int, budget: float,
         min_datapoints: int = MIN_DATAPOINTS) -> Tuple[int, int]:
    """``(n, K)``: how many of ``total`` images, at how many importance samples, fit ``budget``
    seconds at ``seconds_per_pair`` per particle-datapoint pair."""
    cost = max(seconds_per_pair, 1e-12)
    if total * num_samples * cost <= budget:
        return total, num_samples
    n = int(budget / (num_samples * cost))
    floor = min(min_datapoints, total)
    if n >= floor:
        return n, num_samples
    return floor, max(1, min(num_samples, int(budget / (floor * cost))))


def rows_of(data, index: torch.Tensor, device) -> dict:
    """The rows ``index`` of a dict of tensors or a map-style Dataset, as tensors on ``device``."""
    if isinstance(data, dict):
        return {k: v[index.to(v.device)] for k, v in data.items()}
    return head(torch.utils.data.Subset(data, index.tolist()), None, device)


def _merge(parts, num_samples: int) -> LogLikelihood:
    per = torch.cat([p.per_datapoint for p in parts])
    ess = torch.cat([p.ess for p in parts])
    counts = [p.per_datapoint.numel() for p in parts]
    elbo = sum(p.elbo * c for p, c in zip(parts, counts)) / sum(counts)
    mean, stderr = mean_and_stderr(per)
    return LogLikelihood(log_likelihood=mean, stderr=stderr, per_datapoint=per, ess=ess, num_samples=num_samples,
                         elbo=elbo)


def bounded_log_likelihood(model: Callable, guide: Callable, data, num_samples: int, budget: float, *,
                           progress: bool = False, device=None, seed: int = 0,
                           on_plan: Optional[Callable[[int, int, int, float], None]] = None,
                           noun: str = "images") -> BoundedScore:
    """The importance-sampled log-likelihood of as many rows of ``data`` as ``budget`` seconds
    allow (see the module's text), with ``num_samples`` importance samples where they fit.

    :param data: the test split: a dict of tensors or a map-style Dataset (an iterable one is
        read in order, its first rows only).
    :param float budget: seconds the score may take.
    :param str noun: what a row is, in :meth:`BoundedScore.describe` (:func:`datapoint_noun`).
    :param on_plan: called as ``on_plan(n, K, total, seconds_expected)`` once the plan is made
        (the fit prints it).
    :returns: :class:`BoundedScore` (its ``rows``: the rows scored, in order).
    """
    if not isinstance(data, dict) and not hasattr(data, "__getitem__"):
        data = head(data, STREAMED_ROWS, device)  # an iterable Dataset: its first rows
    total = batch_size_of(data) if isinstance(data, dict) else len(data)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    chunk = max(1, min(total, CHUNK_PAIRS // num_samples))
    first_rows = order[:chunk].sort().values
    first = estimate(model, guide, rows_of(data, first_rows, device), num_samples, batch_size=None)
    seconds_per_pair = (time.perf_counter() - t0) / (chunk * num_samples)
    left = max(0.0, budget - (time.perf_counter() - t0))
    n, k = plan(seconds_per_pair, total - chunk, num_samples, left, max(0, MIN_DATAPOINTS - chunk))
    if k == num_samples:
        n = chunk + n
        rest = order[chunk:n].sort().values
        if on_plan is not None:
            on_plan(n, k, total, len(rest) * k * seconds_per_pair)
        parts, index = [first], [first_rows]
        if len(rest):
            parts.append(estimate(model, guide, rows_of(data, rest, device), k, batch_size=None, progress=progress))
            index.append(rest)
    elif chunk >= min(MIN_KEPT, total):  # even the fewest do not fit: the first chunk alone, at the asked K
        k = num_samples
        if on_plan is not None:
            on_plan(chunk, k, total, 0.0)
        parts, index = [first], [first_rows]
    else:  # even the fewest images do not fit at this K, and the chunk is small: all of them again at a smaller K
        n, k = plan(seconds_per_pair, total, num_samples, left)
        rows = order[:n].sort().values
        if on_plan is not None:
            on_plan(n, k, total, n * k * seconds_per_pair)
        parts, index = [estimate(model, guide, rows_of(data, rows, device), k, batch_size=None, progress=progress)], [rows]
    merged, index = _merge(parts, k), torch.cat(index)
    ordering = index.argsort()
    merged.per_datapoint, merged.ess = merged.per_datapoint[ordering], merged.ess[ordering]
    return BoundedScore(estimate=merged, rows=index[ordering], of_datapoints=total, requested_num_samples=num_samples,
                        seconds=time.perf_counter() - t0, budget=budget, noun=noun)
