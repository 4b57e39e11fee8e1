"""Per-datapoint importance weights of a model/guide pair.

Every bound in the suite is a function of the log-weights

.. math:: \\log w_{kn} = \\log p(x_n, z_{kn}) - \\log q(z_{kn} \\mid x_n),
          \\qquad z_{kn} \\sim q(z \\mid x_n),

one row per particle ``k`` and one column per datapoint ``n``. Pyro's own helpers
(``vectorized_importance_weights``, ``psis_diagnostic``) weight the whole batch jointly;
here the guide and the replayed model are traced under a particle plate placed left of
every plate of the program, and each site's log-density is summed down to ``(K, N)``.

The *data plate* of a site is the first vectorized plate (after the particle plate) whose
size equals the batch size ``N``: the ``pyro.plate`` over the batch that the model/guide
contract asks for. Sites outside it (a global latent) have no per-datapoint weight and are
reported with a clear error.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Callable, Dict, Iterable, Optional

import pyro
import pyro.poutine as poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
import torch

PARTICLE_PLATE = "_num_particles"


def batch_size_of(batch: Dict[str, torch.Tensor]) -> int:
    """Number of datapoints in a batch dict: the leading size of its first tensor."""
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    raise ValueError("a batch must hold at least one tensor (one datapoint per row)")


def bind_batch(fn: Callable, keys: Iterable[str]) -> Callable:
    """Return ``fn`` restricted to the batch keys it accepts.

    A batch is a dict of named tensors passed as keyword arguments; a VAE takes ``x`` but
    not the labels ``y`` that a CVAE needs. If ``fn`` accepts ``**kwargs`` (or every key),
    it is returned unchanged.
    """
    keys = list(keys)
    try:
        target = fn.forward if isinstance(fn, torch.nn.Module) else fn
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return fn
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return fn
    accepted = [k for k in keys if k in params]
    if len(accepted) == len(keys):
        return fn
    if not accepted:
        raise ValueError(
            f"{getattr(fn, '__name__', type(fn).__name__)} accepts none of the batch's keys "
            f"{keys}; its arguments are {list(params)}. Name the model's and guide's data "
            "arguments after the batch keys (e.g. x, y)."
        )

    def bound(**batch):
        return fn(**{k: batch[k] for k in accepted})

    bound.__wrapped__ = fn
    return bound


@contextlib.contextmanager
def preserved_rng():
    """Run a block without moving the global RNG streams (torch CPU and CUDA)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def guess_max_plate_nesting(model: Callable, guide: Callable, batch: dict) -> int:
    """How many plate dimensions the pair uses (one trace of guide and replayed model; the
    random streams are left where they were)."""
    with poutine.block(), torch.no_grad(), preserved_rng():
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    nesting = 0
    for trace in (guide_trace, model_trace):
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        nesting = max(nesting, -frame.dim)
    return nesting


class record_sites(Messenger):
    """Keep the sample sites of one run of a program; with ``replay``, also replay the
    latent sites of an earlier run (the guide's) into this one (the model's).

    A lean stand-in for ``poutine.trace`` + ``poutine.replay`` where only the sample sites
    matter (the bounds): it keeps each site's message as is (no copies), records no
    ``param`` sites and builds no graph. Subsample sites of plates are kept (and replayed,
    so a subsampling plate draws the same indices in model and guide) but are not scored.

    :param dict replay: ``{name: message}`` of an earlier run, or None.

    >>> import pyro.distributions as dist
    >>> with record_sites() as recorder:
    ...     _ = pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> list(recorder.sites)
    ['z']
    """

    def __init__(self, replay: Optional[dict] = None):
        super().__init__()
        self.sites: Dict[str, dict] = {}
        self.replay = replay

    def _process_message(self, msg):
        if self.replay is None or msg["type"] != "sample" or msg["is_observed"]:
            return
        earlier = self.replay.get(msg["name"])
        if earlier is not None:
            if earlier["is_observed"]:
                raise RuntimeError(f"site {msg['name']!r} must be sampled in the guide, not observed")
            msg["value"] = earlier["value"]
            msg["infer"] = earlier["infer"]
            msg["done"] = True

    def _postprocess_message(self, msg):
        if msg["type"] != "sample" or msg["infer"].get("_do_not_trace"):
            return
        if msg["name"] in self.sites:
            raise RuntimeError(f"Multiple sample sites named {msg['name']!r}")
        self.sites[msg["name"]] = msg


def site_log_prob(site: dict) -> torch.Tensor:
    """A sample site's scaled and masked log-density (its batch shape), as
    ``Trace.compute_log_prob`` computes it."""
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"])


def run_pair(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor]) -> tuple:
    """Run the guide, then the model with the guide's latent values: ``(guide_sites,
    model_sites)``, dicts of the sample-site messages in program order."""
    with record_sites() as guide_run:
        guide(**batch)
    with record_sites(replay=guide_run.sites) as model_run:
        model(**batch)
    return guide_run.sites, model_run.sites


def site_log_prob_per_datapoint(site: dict, n: int, nesting: int, num_particles: int,
                                log_p: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum one site's (scaled, masked) log-density (``site["log_prob"]`` unless ``log_p`` is
    given) down to shape (K, N)."""
    data_dim = None
    for frame in site["cond_indep_stack"]:
        if frame.vectorized and frame.name != PARTICLE_PLATE and frame.size == n:
            data_dim = frame.dim
            break
    if data_dim is None:
        raise ValueError(
            f"site {site['name']!r} is not inside a pyro.plate over the batch (size {n}); "
            "per-datapoint importance weights need every sample site inside the data plate"
        )
    full = nesting + 1
    if log_p is None:
        log_p = site["log_prob"]
    log_p = log_p.reshape((1,) * (full - log_p.dim()) + log_p.shape)
    keep = (0, full + data_dim)
    other = [d for d in range(full) if d not in keep]
    if other:
        log_p = log_p.sum(other, keepdim=True)
    log_p = log_p.reshape(log_p.shape[0], log_p.shape[full + data_dim])
    return log_p.expand(num_particles, n)


def log_weights(
    model: Callable,
    guide: Callable,
    batch: Dict[str, torch.Tensor],
    num_particles: int = 1,
    *,
    max_plate_nesting: Optional[int] = None,
    return_traces: bool = False,
):
    """Importance log-weights ``log p(x, z) - log q(z | x)``, shape ``(K, N)``.

    :param callable model: a Pyro model taking the batch's tensors as keyword arguments.
    :param callable guide: a guide with the same signature.
    :param dict batch: named tensors, one datapoint per row.
    :param int num_particles: K, the number of guide draws per datapoint (vectorized).
    :param int max_plate_nesting: plates the pair uses; guessed from one trace if None.
    :param bool return_traces: also return ``(guide_trace, model_trace)``.
    :returns: a tensor ``(K, N)`` (differentiable: reparameterized guide draws carry
        gradients into the guide, and the model's parameters into ``log p``).
    """
    n = batch_size_of(batch)
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, batch)
    if return_traces:
        return _log_weights_traced(model, guide, batch, num_particles, max_plate_nesting, n)
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)):
        guide_sites, model_sites = run_pair(model, guide, batch)
    return weights_from_sites(model_sites, guide_sites, n, max_plate_nesting, num_particles)


def weights_from_sites(model_sites: dict, guide_sites: dict, n: int, nesting: int, num_particles: int) -> torch.Tensor:
    """The ``(K, N)`` log-weights of one run of :func:`run_pair` under the particle plate."""
    log_w = None
    for sites, sign in ((model_sites, 1.0), (guide_sites, -1.0)):
        for site in sites.values():
            if site_is_subsample(site) or (sign < 0 and site["is_observed"]):
                continue
            term = site_log_prob_per_datapoint(site, n, nesting, num_particles, log_p=site_log_prob(site))
            log_w = sign * term if log_w is None else log_w + sign * term
    if log_w is None:
        raise ValueError("the model has no sample sites")
    return log_w


def _log_weights_traced(model, guide, batch, num_particles, max_plate_nesting, n):
    """:func:`log_weights` through Pyro's own ``trace`` and ``replay`` (the same numbers),
    returning the traces as well."""
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = None
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if sign < 0 and site["is_observed"]:
                continue
            term = site_log_prob_per_datapoint(site, n, max_plate_nesting, num_particles)
            log_w = sign * term if log_w is None else log_w + sign * term
    if log_w is None:
        raise ValueError("the model has no sample sites")
    return log_w, guide_trace, model_trace


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])
