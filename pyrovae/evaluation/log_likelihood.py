"""Honest evaluation: importance-sampled log-likelihoods in nats.

.. math:: \\log p(x) \\approx \\log \\frac{1}{K} \\sum_{k=1}^K
          \\frac{p(x, z_k)}{q(z_k \\mid x)}, \\qquad z_k \\sim q(z \\mid x),

a stochastic lower bound (in expectation) that tightens as K grows (Burda et al.). Never a
Parzen-window estimate: Theis et al. show those can rank models in any order.

References

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519
[2] Theis, van den Oord, Bethge. A note on the evaluation of generative models. arXiv:1511.01844
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import pyro
import torch

from tqdm.auto import tqdm

from pyrovae.data.inputs import eval_split, is_tensor_data, resolve_dataset
from pyrovae.infer.importance import eval_mode  # noqa: F401 (imported from here by evaluation's modules)
from pyrovae.infer.importance import (
    batch_size_of, bind_batch, guess_max_plate_nesting, log_weights, mean_and_stderr, summarize,
)


@dataclass
class LogLikelihood:
    """An importance-sampled estimate over a data set.

    :ivar float log_likelihood: mean over datapoints of log p(x), nats.
    :ivar float stderr: standard error of that mean over datapoints.
    :ivar torch.Tensor per_datapoint: (N,) estimates.
    :ivar torch.Tensor ess: (N,) effective sample size of each datapoint's weights.
    :ivar int num_samples: K.
    :ivar float elbo: mean of the single-sample bound over the same draws.
    """

    log_likelihood: float
    stderr: float
    per_datapoint: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    elbo: float

    def __repr__(self) -> str:
        return (f"LogLikelihood({self.log_likelihood:.3f} ± {self.stderr:.3f} nats, K={self.num_samples}, "
                f"N={self.per_datapoint.numel()}, ELBO {self.elbo:.3f}, mean ESS {float(self.ess.mean()):.1f})")

    def as_dict(self) -> dict:
        return {
            "log_likelihood": self.log_likelihood,
            "stderr": self.stderr,
            "elbo": self.elbo,
            "num_samples": self.num_samples,
            "num_datapoints": int(self.per_datapoint.numel()),
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
        }


def default_max_pass(device) -> int:
    """Particle-datapoint pairs per pass: 5,000 on a CPU (a pass's tensors then stay in the
    caches: 7-11 us per pair for a 784-200-200-50 VAE, against 14-16 us with 20,000-50,000),
    1,000,000 on a GPU (about 8 GB of activations for that decoder; a pass that runs out of
    memory is split in two and retried)."""
    return 1_000_000 if torch.device(device).type == "cuda" else 5_000


def _data_device(data: dict) -> torch.device:
    return next(v.device for v in data.values() if isinstance(v, torch.Tensor))


def iter_log_weights(
    model: Callable, guide: Callable, data: dict, num_samples: int,
    batch_size: Optional[int] = 100, max_pass: Optional[int] = None,
) -> Iterator[torch.Tensor]:
    """Yield ``(K, B)`` log-weights for successive data batches, drawing the K particles in
    chunks so that at most ``max_pass`` particle-datapoint pairs are alive at once.

    ``max_pass=None`` takes :func:`default_max_pass` of the data's device; ``batch_size=None``
    makes each pass hold all K particles of as many datapoints as fit in ``max_pass``."""
    n = batch_size_of(data)
    if max_pass is None:
        max_pass = default_max_pass(_data_device(data))
    if batch_size is None:
        batch_size = max(1, min(n, max_pass // num_samples))
    model, guide = bind_batch(model, data), bind_batch(guide, data)
    nesting = None
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        if nesting is None:
            nesting = guess_max_plate_nesting(model, guide, batch)
        chunk = max(1, min(num_samples, max_pass // batch_size_of(batch)))
        parts, k0 = [], 0
        while k0 < num_samples:
            k = min(chunk, num_samples - k0)
            try:
                parts.append(log_weights(model, guide, batch, k, max_plate_nesting=nesting))
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = max(1, chunk // 2)  # smaller passes from now on
                torch.cuda.empty_cache()
                continue
            k0 += k
        yield torch.cat(parts, 0)


def eval_data(data, split: str = "test", data_dir=None, device=None, max_bytes: Optional[int] = None):
    """What an evaluation reads: a dict of tensors (tensors, a named data set's ``split``, or a
    Dataset that fits on the device, read once) or a streamed
    :class:`~pyrovae.data.sources.Source` (a larger Dataset, an IterableDataset, a DataLoader,
    the ``split`` of a :class:`~pyrovae.data.files.UserData`)."""
    from pyrovae.data.sources import Source, TensorSource, as_source

    if isinstance(data, Source):
        return data.split if isinstance(data, TensorSource) else data
    dataset = resolve_dataset(data, data_dir)
    chosen = getattr(dataset, split) if dataset is not None else data
    if chosen is None:
        raise ValueError(f"the data has no {split} split")
    if is_tensor_data(chosen):
        return eval_split(chosen, split, device=device)
    source = as_source(chosen, device or "cpu", max_bytes=max_bytes)
    return source.split if isinstance(source, TensorSource) else source


def _source_log_weights(model, guide, source, num_samples: int, batch_size: Optional[int],
                        max_pass: Optional[int]) -> Iterator[torch.Tensor]:
    """:func:`iter_log_weights` over a streamed source, ``batch_size`` rows read at a time."""
    if max_pass is None:
        max_pass = default_max_pass(source.device)
    rows = batch_size if batch_size is not None else max(1, max_pass // num_samples)
    for batch in source.epoch_batches(rows, shuffle=False):
        yield from iter_log_weights(model, guide, batch, num_samples, batch_size, max_pass)


def _num_rows(data) -> Optional[int]:
    return batch_size_of(data) if isinstance(data, dict) else data.num_rows


def log_likelihood(
    model: Callable,
    guide: Callable,
    data,
    num_samples: int = 1000,
    *,
    batch_size: Optional[int] = 100,
    max_pass: Optional[int] = None,
    split: str = "test",
    data_dir=None,
    device=None,
    progress: bool = False,
) -> LogLikelihood:
    """Importance-sampled ``log p(x)`` per datapoint, in nats, with the guide as proposal.

    :param model: a Pyro model.
    :param guide: a guide whose draws are the proposal.
    :param data: a tensor, a dict of tensors, a DataSet, a data set name, a path or
        ``module:function`` (its ``split``), a torch Dataset, IterableDataset or DataLoader
        (held on the device where it fits, else read batch by batch).
    :param int num_samples: K importance samples per datapoint.
    :param int batch_size: datapoints per pass (None: as many as ``max_pass`` holds with all
        K particles each, which fills a GPU).
    :param int max_pass: at most this many particle x datapoint pairs in one pass (memory;
        None: 5,000 on a CPU, 1,000,000 on a GPU, see :func:`default_max_pass`).
    :param device: move the data there (the pair must already be there).
    :returns: :class:`LogLikelihood` with the mean, its standard error and per-datapoint ESS.

    >>> import torch
    >>> from pyrovae.models import VAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> x = torch.bernoulli(torch.full((10, 6), 0.5))
    >>> est = log_likelihood(VAE(6, 2), DiagNormalGuide(6, 2), x, num_samples=50)
    >>> est.log_likelihood <= 0
    True
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = eval_data(data, split, data_dir, device)
    return estimate(model, guide, data, num_samples, batch_size, max_pass, progress)


def estimate(model: Callable, guide: Callable, data: dict, num_samples: int, batch_size: Optional[int] = 100,
             max_pass: Optional[int] = None, progress: bool = False,
             on_weights: Optional[Callable[[torch.Tensor], None]] = None) -> LogLikelihood:
    """:func:`log_likelihood` on a batch dict or a streamed source; ``on_weights(log_w)`` also
    sees each pass's ``(K, B)`` log-weights (the report computes PSIS k-hat from the same draws)."""
    lls, esss, elbos = [], [], []
    bar = tqdm(disable=not progress, dynamic_ncols=True, total=_num_rows(data),
               desc=f"log-likelihood K={num_samples}")
    passes = (iter_log_weights if isinstance(data, dict) else _source_log_weights)
    with torch.no_grad(), eval_mode(model, guide), pyro.validation_enabled(False):
        for log_w in passes(model, guide, data, num_samples, batch_size, max_pass):
            ll, ess, elbo_n = summarize(log_w)
            lls.append(ll)
            esss.append(ess)
            elbos.append(elbo_n)
            if on_weights is not None:
                on_weights(log_w)
            bar.update(log_w.shape[1])
    bar.close()
    ll = torch.cat(lls).double().cpu()
    mean, stderr = mean_and_stderr(ll)
    return LogLikelihood(log_likelihood=mean, stderr=stderr, per_datapoint=ll, ess=torch.cat(esss).cpu(),
                         num_samples=num_samples, elbo=mean_and_stderr(torch.cat(elbos))[0])


def elbo(model: Callable, guide: Callable, data, num_samples: int = 1, *, batch_size: int = 500,
         split: str = "test", data_dir=None, device=None) -> float:
    """Mean over datapoints of the Monte Carlo ELBO ``E_q[log p(x, z) - log q(z | x)]``
    (``data`` as for :func:`log_likelihood`; a streamed source is read ``batch_size`` rows at a
    time, with the same draws as the same rows held as tensors)."""
    data = eval_data(data, split, data_dir, device)
    total, count = 0.0, 0
    passes = (iter_log_weights if isinstance(data, dict) else _source_log_weights)
    with torch.no_grad(), eval_mode(model, guide), pyro.validation_enabled(False):
        for log_w in passes(model, guide, data, num_samples, batch_size, None):
            total += float(log_w.double().mean(0).sum())
            count += log_w.shape[1]
    return total / count
