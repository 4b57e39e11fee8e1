"""ArviZ diagnostics of an amortized posterior: InferenceData and PSIS k-hat.

:func:`to_inference_data` stores, for a subset of datapoints, ``S`` draws of every latent
site from the guide (group ``posterior``, dims ``chain=1, draw=S, datapoint, <site>_dim``),
fresh draws of the observed sites given them (``posterior_predictive``), the data of
every observed site under the site's own name, found from the trace (``observed_data``), the pointwise ``log p(x_n | z_{sn})`` (``log_likelihood``), prior and
prior-predictive draws, and the importance log-weights
:math:`\\log w_{sn} = \\log p(x_n, z_{sn}) - \\log q(z_{sn} \\mid x_n)` (``sample_stats``).

:func:`psis_khat` is the diagnostic of Yao et al.: fit a generalized Pareto distribution
to the largest importance weights of each datapoint; its shape :math:`\\hat k` says how
heavy their tail is. :math:`\\hat k < 0.5`: q covers the posterior and importance sampling
(IWAE) converges fast; :math:`0.5 \\le \\hat k < 0.7`: usable but slow; :math:`\\hat k > 0.7`:
the variance of the weights is (practically) infinite, q misses mass of the posterior, and
importance-sampled log-likelihoods of those datapoints are unreliable.

References

[1] Yao, Vehtari, Simpson, Gelman. Yes, but Did It Work?: Evaluating Variational
    Inference. arXiv:1802.02538
[2] Vehtari, Simpson, Gelman, Yao, Gabry. Pareto Smoothed Importance Sampling. arXiv:1507.02646
[3] Kumar, Carroll, Hartikainen, Martin. ArviZ a unified library for exploratory analysis of
    Bayesian models in Python. JOSS 4(33), 2019
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from pyrovae.data.inputs import eval_split
from pyrovae.evaluation.log_likelihood import eval_mode, iter_log_weights
from pyrovae.infer.importance import (
    PARTICLE_PLATE, batch_size_of, bind_batch, data_dim, data_plate, declared_data_plate, latent_sites,
    log_density_per_datapoint, observed_sites, plate_nesting, sample_sites,
)

KHAT_GOOD, KHAT_BAD = 0.5, 0.7
CONSTANT_WEIGHTS = 1e-3


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def _per_datapoint_value(site, n: int, nesting: int, plate: str) -> torch.Tensor:
    """A site's value under the particle plate as ``(S, N, *rest)`` (data plate moved to axis 1)."""
    value = site["value"]
    batch_dims = value.dim() - site["fn"].event_dim
    value = value.reshape(value.shape[:1] + (1,) * (nesting + 1 - batch_dims) + value.shape[1:])
    rest = value.movedim(1 + nesting + data_dim(site, plate, n), 1)
    return rest.reshape(rest.shape[:2] + tuple(d for i, d in enumerate(rest.shape[2:]) if not
                                               (i < nesting - 1 and d == 1)))


def _observed_value(site, n: int, plate: str) -> torch.Tensor:
    """An observed site's data (its ``obs=`` tensor) as ``(N, *rest)``."""
    value = site["value"]
    return value.movedim(value.dim() - site["fn"].event_dim + data_dim(site, plate, n), 0)


def _draws(model, guide, batch, num_samples, num_predictive):
    """One chunk of datapoints: (dict of group -> {name: array (S, N, ...)}, {observed site: data (N, ...)})."""
    n = batch_size_of(batch)
    declared = declared_data_plate(model)
    model, guide = bind_batch(model, batch), bind_batch(guide, batch)
    nesting = plate_nesting(poutine.trace(model).get_trace(**batch))
    out: Dict[str, Dict[str, torch.Tensor]] = {g: {} for g in (
        "posterior", "posterior_predictive", "log_likelihood", "prior", "prior_predictive", "sample_stats")}
    with pyro.plate(PARTICLE_PLATE, num_samples, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    latents = {s["name"]: s["value"][:num_predictive] for s in latent_sites(guide_trace)}
    with pyro.plate(PARTICLE_PLATE, num_predictive, dim=-(nesting + 1)):
        # fresh x given the first draws of z (paired by draw index with the posterior group)
        predictive = poutine.trace(poutine.condition(poutine.uncondition(model), data=latents)).get_trace(**batch)
        prior = poutine.trace(poutine.uncondition(model)).get_trace(**batch)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    plate, guide_plate = data_plate(model_trace, n, declared), data_plate(guide_trace, n, declared)
    log_joint = log_density_per_datapoint(sample_sites(model_trace), n, nesting, num_samples, plate)
    log_q = log_density_per_datapoint(latent_sites(guide_trace), n, nesting, num_samples, guide_plate)
    observed = {s["name"]: _observed_value(s, n, plate) for s in observed_sites(model_trace)}
    for s in latent_sites(guide_trace):
        out["posterior"][s["name"]] = _per_datapoint_value(s, n, nesting, guide_plate)
    for s in observed_sites(model_trace):
        out["log_likelihood"][s["name"]] = log_density_per_datapoint([s], n, nesting, num_samples, plate)
    for name in observed:
        out["posterior_predictive"][name] = _per_datapoint_value(predictive.nodes[name], n, nesting, plate)
        out["prior_predictive"][name] = _per_datapoint_value(prior.nodes[name], n, nesting, plate)
    for name in out["posterior"]:
        if name in prior.nodes:
            out["prior"][name] = _per_datapoint_value(prior.nodes[name], n, nesting, plate)
    out["sample_stats"] = {"log_weight": log_joint - log_q, "lp": log_joint, "log_q": log_q}
    return out, observed


def to_inference_data(model: Callable, guide: Callable, data, num_samples: int = 200, num_datapoints: int = 100, *,
                      num_predictive: Optional[int] = 100, max_pass: int = 50_000, split: str = "test",
                      data_dir=None, device=None):
    """ArviZ ``InferenceData`` of the amortized posterior on the first ``num_datapoints`` rows.

    :param data: a tensor, a dict of tensors, a DataSet or a data set name (its ``split``).
    :param int num_samples: S, guide draws per datapoint (``draw`` dimension).
    :param int num_datapoints: how many datapoints (the first ones).
    :param int num_predictive: draws kept in the predictive and prior groups (images are large);
        None keeps ``num_samples``.
    :param int max_pass: at most this many draw x datapoint pairs per pass (memory).
    :returns: ``arviz.InferenceData``; save it with ``idata.to_netcdf(path)`` (h5netcdf).

    >>> from pyrovae.models import VAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> idata = to_inference_data(VAE(6, 2), DiagNormalGuide(6, 2), torch.rand(5, 6).round(), num_samples=10)
    >>> dict(idata.posterior["z"].sizes)
    {'chain': 1, 'draw': 10, 'datapoint': 5, 'z_dim': 2}
    """
    az = _arviz()
    batch = eval_split(data, split, data_dir, device)
    batch = {k: v[:num_datapoints] for k, v in batch.items()}
    n = batch_size_of(batch)
    num_predictive = min(num_samples, num_predictive or num_samples)
    chunk = max(1, max_pass // num_samples)
    parts = []
    with torch.no_grad(), eval_mode(model, guide), pyro.validation_enabled(False):
        for lo in range(0, n, chunk):
            parts.append(_draws(model, guide, {k: v[lo:lo + chunk] for k, v in batch.items()}, num_samples, num_predictive))
    groups, dims, coords = {}, {}, {"datapoint": np.arange(n)}
    for group in parts[0][0]:
        arrays = {}
        for name in parts[0][0][group]:
            value = torch.cat([p[0][group][name] for p in parts], 1)
            arrays[name] = value.unsqueeze(0).cpu().numpy()            # (chain=1, draw, datapoint, ...)
            rest = value.shape[2:]
            dims[(group, name)] = ["datapoint"] + ([f"{name}_dim"] if len(rest) == 1 else
                                                    [f"{name}_dim_{i}" for i in range(len(rest))])
        groups[group] = az.dict_to_dataset(arrays, coords=coords, dims={k: dims[(group, k)] for k in arrays},
                                           library=pyro)
    observed_data = {}  # every observed site of the model, under its own name
    for name in parts[0][1]:
        value = torch.cat([p[1][name] for p in parts], 0)
        observed_data[name] = value.reshape((n,) + tuple(groups_shape(parts, name))).cpu().numpy()
    groups["observed_data"] = az.dict_to_dataset(
        observed_data, coords=coords, default_dims=[],
        dims={k: dims[("posterior_predictive", k)] for k in observed_data}, library=pyro)
    return az.InferenceData(**groups)


def groups_shape(parts, name) -> tuple:
    """The per-datapoint shape of observed site ``name`` in the predictive group."""
    return tuple(parts[0][0]["posterior_predictive"][name].shape[2:])


def save_inference_data(idata, path) -> Path:
    """Write ``idata`` as netCDF-4 through h5netcdf (no netCDF4 library needed), compressed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(path), engine="h5netcdf")
    return path


def psis_khat(log_weights) -> np.ndarray:
    """Pareto k-hat per datapoint from log-weights of shape ``(S, N)`` (samples first).

    ArviZ's ``psislw`` smooths along the *last* axis, so the weights are passed transposed
    as ``(N, S)``; passing ``(S, N)`` would silently fit one Pareto tail per sample index.
    A datapoint whose log-weights all agree to within 1e-3 nats (q equal to the posterior,
    up to rounding) has no tail to fit; its k-hat is reported as 0 rather than ArviZ's inf.
    """
    log_w = torch.as_tensor(log_weights).detach().double().cpu().numpy()
    if log_w.ndim != 2:
        raise ValueError(f"log_weights must be (num_samples, num_datapoints), got shape {log_w.shape}")
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, khat = az.psislw(log_w.T.copy())
    khat = np.asarray(khat, dtype=float)
    # weights equal to within CONSTANT_WEIGHTS nats (an exact proposal, up to float rounding)
    # have no tail to fit: the generalized Pareto fit degenerates (inf or noise); report 0
    constant = (log_w.max(0) - log_w.min(0)) < CONSTANT_WEIGHTS
    khat[constant] = 0.0
    return khat


def khat_summary(khat) -> dict:
    """Share of datapoints with k-hat above 0.7 and 0.5, the max and the median."""
    khat = np.asarray(khat, dtype=float)
    return {"num_datapoints": int(khat.size), "share_above_0.7": float((khat > KHAT_BAD).mean()),
            "share_above_0.5": float((khat > KHAT_GOOD).mean()), "max": float(khat.max()),
            "median": float(np.median(khat))}


def psis_diagnostic(model: Callable, guide: Callable, data, num_samples: int = 1000, *,
                    num_datapoints: Optional[int] = None, batch_size: int = 100, split: str = "test",
                    data_dir=None, device=None) -> np.ndarray:
    """k-hat per datapoint of the importance weights ``p(x, z) / q(z | x)``, ``z ~ q``.

    :returns: ``(N,)`` numpy array; summarize it with :func:`khat_summary`.

    >>> from pyrovae.models import VAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> psis_diagnostic(VAE(6, 2), DiagNormalGuide(6, 2), torch.rand(4, 6).round(), 200).shape
    (4,)
    """
    batch = eval_split(data, split, data_dir, device)
    if num_datapoints is not None:
        batch = {k: v[:num_datapoints] for k, v in batch.items()}
    khats = []
    with torch.no_grad(), eval_mode(model, guide), pyro.validation_enabled(False):
        for log_w in iter_log_weights(model, guide, batch, num_samples, batch_size):
            khats.append(psis_khat(log_w))
    return np.concatenate(khats)
