"""The per-datapoint importance core: run a pair, find its data plate and latent sites,
reduce log-densities to per-datapoint log-weights, and summarize them.

Every bound in the suite is a function of the log-weights

.. math:: \\log w_{kn} = \\log p(x_n, z_{kn}) - \\log q(z_{kn} \\mid x_n),
          \\qquad z_{kn} \\sim q(z \\mid x_n),

one row per particle ``k`` and one column per datapoint ``n``. Pyro's own helpers
(``vectorized_importance_weights``, ``psis_diagnostic``) weight the whole batch jointly:
one weight per sample, not per datapoint, which is why this module exists. Here the guide
and the replayed model are traced under a particle plate placed left of every plate of the
program, and each site's log-density is summed down to ``(K, N)``.

**The data plate** of a program is the plate declared by its ``data_plate`` attribute
(a plate name), else the outermost plate of the program (the first vectorized plate its
sample sites enter; the particle plate left out), which must have the batch's size ``N``:
a model written ``with pyro.plate("data", N): ...`` needs no declaration, nor does a set
plate around an item plate. A plate without a size (``with pyro.plate("data"): ...``, where
Pyro takes the size from the sites' distributions) is taken as it is: each site's
log-density must then have ``N`` entries along it, one per datapoint, else (a draw shared by
the batch) the error names the site. Sites outside it (a global latent) have no per-datapoint
weight and are reported with a clear error.
The rest of the suite (objectives, evaluation, diagnostics) calls the helpers below
instead of filtering traces itself: :func:`sample_sites`, :func:`latent_sites`,
:func:`observed_sites`, :func:`data_plate`, :func:`log_density_per_datapoint`,
:func:`analytic_kl` / :func:`kl_or_sampled`, and :func:`summarize` / :func:`mean_and_stderr`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from torch.distributions.utils import _standard_normal, _sum_rightmost, broadcast_all
from torch.nn.functional import binary_cross_entropy_with_logits
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

PARTICLE_PLATE = "_num_particles"
UNSIZED = -1  # the size Pyro gives a pyro.plate declared without one


# ---------------------------------------------------------------- batches


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


def preserved_rng():
    """A context that leaves the global random streams (torch CPU, and the CUDA devices once
    CUDA is in use) where they were: ``torch.random.fork_rng``."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


# ---------------------------------------------------------------- sites and plates


def sample_sites(sites) -> Iterator[dict]:
    """The sample sites of a trace (or a dict of site messages), plates' subsample sites left out."""
    for site in getattr(sites, "nodes", sites).values():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield site


def latent_sites(sites) -> list:
    """The sample sites that are not observed."""
    return [site for site in sample_sites(sites) if not site["is_observed"]]


def observed_sites(sites) -> list:
    """The observed sample sites (``obs=``), whatever their names."""
    return [site for site in sample_sites(sites) if site["is_observed"]]


def declared_data_plate(fn: Callable) -> Optional[str]:
    """The ``data_plate`` attribute of ``fn``, looking through Pyro handlers and wrappers."""
    while fn is not None:
        name = getattr(fn, "data_plate", None)
        if isinstance(name, str):
            return name
        unwrapped = poutine.unwrap(fn)
        fn = unwrapped if unwrapped is not fn else getattr(fn, "__wrapped__", None)
    return None


def data_plate(sites, n: int, declared: Optional[str] = None) -> Optional[str]:
    """The name of the data plate of one run of a program (see the module docs): the
    ``declared`` plate where the run has it, else its outermost plate; None when no sample
    site is inside a plate. A plate without a size (Pyro's size -1) passes the size check
    here; :func:`per_datapoint` checks its sites' entries along it.

    :param sites: a trace or a dict of sample-site messages.
    :param int n: the batch size.
    :param str declared: the program's declared data plate, used where the run has it.
    """
    outermost = None
    for site in sample_sites(sites):
        # cond_indep_stack lists a site's plates outermost first
        frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE]
        for frame in frames:
            if frame.name == declared:
                if frame.size not in (n, UNSIZED):
                    raise ValueError(f"the declared data plate {declared!r} has size {frame.size}, "
                                     f"not the batch size {n}")
                return declared
        if outermost is None and frames:
            outermost = frames[0]
    if outermost is not None and outermost.size not in (n, UNSIZED):
        raise ValueError(
            f"the outermost plate {outermost.name!r} has size {outermost.size}, not the batch size {n}: "
            "make the pyro.plate over the batch the outermost plate of the model and guide, or name it "
            "in a data_plate attribute (model.data_plate = 'data')"
        )
    return None if outermost is None else outermost.name


def data_dim(site: dict, plate: Optional[str], n: int) -> int:
    """The (negative) dim of the data plate ``plate`` in ``site``'s batch shape."""
    for frame in site["cond_indep_stack"]:
        if frame.name == plate and frame.vectorized:
            return frame.dim
    raise ValueError(
        f"site {site['name']!r} is not inside the data plate ({plate or f'a pyro.plate of size {n}'!r}); "
        "per-datapoint weights need every sample site inside the pyro.plate over the batch (or set "
        "the model's data_plate attribute to the name of that plate)"
    )


def plate_nesting(*traces) -> int:
    """The number of vectorized plate dimensions the traces use."""
    nesting = 0
    for trace in traces:
        for site in sample_sites(trace):
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    nesting = max(nesting, -frame.dim)
    return nesting


def guess_max_plate_nesting(model: Callable, guide: Callable, batch: dict) -> int:
    """How many plate dimensions the pair uses (one trace of guide and replayed model; the
    random streams are left where they were)."""
    with poutine.block(), torch.no_grad(), preserved_rng():
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    return plate_nesting(guide_trace, model_trace)


# ---------------------------------------------------------------- one run of a pair


class RecordSitesMessenger(Messenger):
    """Keep the sample sites of one run of a program; with ``replay``, also replay the
    latent sites of an earlier run (the guide's) into this one (the model's).

    A lean stand-in for ``poutine.trace`` + ``poutine.replay`` where only the sample sites
    matter (the bounds): it keeps each site's message as is (no copies), records no
    ``param`` sites and builds no graph. Subsample sites of plates are kept (and replayed,
    so a subsampling plate draws the same indices in model and guide) but are not scored.

    With ``keep_noise``, a latent site drawn from a reparameterized ``Normal`` (or its
    ``to_event``) keeps the standard-normal noise of its draw (:func:`noise_keeping`), from
    which :func:`log_prob` takes its log-density.

    :param dict replay: ``{name: message}`` of an earlier run, or None.
    :param bool keep_noise: keep the noise of Normal draws (where nothing is replayed).
    """

    def __init__(self, replay: Optional[dict] = None, keep_noise: bool = False):
        super().__init__()
        self.sites: Dict[str, dict] = {}
        self.replay = replay
        self.keep_noise = keep_noise

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if self.replay is None:
            if self.keep_noise and not msg["done"] and msg["value"] is None:
                fn = noise_keeping(msg["fn"])
                if fn is not None:
                    msg["fn"] = fn
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


def record_sites(replay: Optional[dict] = None, keep_noise: bool = False) -> RecordSitesMessenger:
    """The handler of :class:`RecordSitesMessenger`.

    >>> import pyro.distributions as dist
    >>> with record_sites() as recorder:
    ...     _ = pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> list(recorder.sites)
    ['z']
    """
    return RecordSitesMessenger(replay, keep_noise)


def run_pair(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor]) -> tuple:
    """Run the guide, then the model with the guide's latent values: ``(guide_sites,
    model_sites)``, dicts of the sample-site messages in program order. The guide's Normal
    draws keep their noise (:func:`noise_keeping`)."""
    with record_sites(keep_noise=True) as guide_run:
        guide(**batch)
    with record_sites(replay=guide_run.sites) as model_run:
        model(**batch)
    return guide_run.sites, model_run.sites


def site_log_prob(site: dict) -> torch.Tensor:
    """A sample site's scaled and masked log-density (its batch shape), as
    ``Trace.compute_log_prob`` computes it (or its ``log_prob`` where already computed)."""
    if "log_prob" in site:
        return site["log_prob"]
    if site["args"] or site["kwargs"]:
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    else:
        log_p = log_prob(site["fn"], site["value"])
    return scale_and_mask(log_p, site["scale"], site["mask"])


_INDEPENDENT_LOG_PROB = torch.distributions.Independent.log_prob
_BERNOULLI_LOG_PROB = torch.distributions.Bernoulli.log_prob


def log_prob(fn, value: torch.Tensor) -> torch.Tensor:
    """``fn.log_prob(value)`` in fewer operations for the commonest forms of a VAE's sites
    (the same numbers and gradients bit for bit, but for the last, to float rounding), for
    ``Independent(..., 1)`` (``.to_event(1)``) of torch's own ``log_prob``:

    - the sum over the event dim without ``Independent``'s reshape to the same shape (a view and
      its backward node);
    - a ``Bernoulli``: ``-(cross-entropy summed)`` instead of torch's ``sum of (-cross-entropy)``
      (negation commutes with rounding), one negation of a ``(batch,)`` tensor instead of one of
      the ``(batch, x_dim)`` cross-entropy, forward and backward; not where the Bernoulli
      validates its arguments (torch's own ``log_prob`` checks the value then).

    - a reparameterized ``Normal`` draw that kept its noise (:func:`noise_keeping`), at that
      draw: from the noise, as a hand-written step does (the same value and gradients to float
      rounding, see :func:`noise_log_prob`).

    Anything else is ``fn.log_prob(value)``.
    """
    from_noise = noise_log_prob(fn, value)
    if from_noise is not None:
        return from_noise
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1 \
            and type(fn).log_prob is _INDEPENDENT_LOG_PROB:
        base = fn.base_dist
        if isinstance(base, torch.distributions.Bernoulli) and type(base).log_prob is _BERNOULLI_LOG_PROB \
                and not base._validate_args:
            logits = base.logits
            if logits.shape != value.shape:
                logits, value = broadcast_all(logits, value)
            return -binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
        return base.log_prob(value).sum(-1)
    return fn.log_prob(value)


class _NoiseNormal(dist.Normal):
    """Pyro's ``Normal`` whose ``rsample`` keeps the noise of its draw: ``_noise = (z, eps)``
    with ``z = loc + eps * scale`` (torch's own draw, the same random stream and the same
    operations), and whose expansions (a plate's broadcast) remember the scale it was made
    with (``_root_scale``, unexpanded). Made only by :func:`noise_keeping`."""

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = self.loc + eps * self.scale
        self._noise = (z, eps)
        return z

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._root_scale = self._root_scale
        return new


def _retyped(obj, cls):
    """A shallow copy of ``obj`` as an instance of ``cls`` (a subclass of its type that adds
    no state of its own)."""
    new = cls.__new__(cls)
    new.__dict__.update(obj.__dict__)
    return new


def noise_keeping(fn):
    """``fn`` as a distribution whose draws keep their noise, for a site whose log-density is
    then taken from the noise (:func:`noise_log_prob`); None where ``fn`` is not Pyro's own
    ``Normal`` or ``Normal(...).to_event(n)`` without argument validation (anything else,
    e.g. a subclass, a masked or transformed Normal, draws as it would)."""
    outer, base = None, fn
    if type(fn) is dist.Independent:
        outer, base = fn, fn.base_dist
    if type(base) is not dist.Normal or base._validate_args:
        return None
    keeping = _retyped(base, _NoiseNormal)
    keeping._root_scale = base.scale
    if outer is None:
        return keeping
    outer = _retyped(outer, dist.Independent)
    outer.base_dist = keeping
    return outer


_HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))  # torch's constant in Normal.log_prob


def noise_log_prob(fn, value: torch.Tensor) -> Optional[torch.Tensor]:
    """The log-density of a Normal draw from the noise it was drawn with (None where ``fn``
    did not draw ``value`` keeping its noise, see :func:`noise_keeping`):

    .. math:: \\log q(z) = -\\tfrac12 \\epsilon^2 - \\log \\sigma - \\tfrac12 \\log 2\\pi,
              \\qquad z = \\mu + \\sigma \\epsilon,

    summed over the event dims, with ``log sigma`` taken of the unexpanded scale (once for K
    particles). torch's ``log_prob(z)`` computes ``(z - mu)^2 / (2 sigma^2)``, equal to
    ``eps^2 / 2`` to float rounding; its gradient through ``z`` and the parameters sums to the
    same total derivative, ``-d log sigma`` (the ``mu`` and ``eps^2`` parts cancel exactly in
    the math), here computed without the terms that cancel."""
    base, event_dims = fn, 0
    if type(fn) is dist.Independent:
        base, event_dims = fn.base_dist, fn.reinterpreted_batch_ndims
    if type(base) is not _NoiseNormal:
        return None
    noise = base.__dict__.get("_noise")
    if noise is None or noise[0] is not value:
        return None
    eps = noise[1]
    log_q = 0.5 * eps ** 2 + base._root_scale.log() + _HALF_LOG_2PI
    return -(_sum_rightmost(log_q, event_dims) if event_dims else log_q)


# ---------------------------------------------------------------- per-datapoint log-densities


def per_datapoint(log_p: torch.Tensor, dim: int, nesting: int, num_particles: int, n: int,
                  name: str = "a site") -> torch.Tensor:
    """Sum a log-density of batch shape (particle plate, ..., data plate at ``dim``, ...) down
    to ``(K, N)``: over every plate but the particles and the data. Its extent along the data
    plate must be ``N`` (always so inside a sized plate; a plate without a size has the extent
    of its sites' distributions): a site ``name`` with one entry shared by the batch is an error."""
    full = nesting + 1
    if log_p.dim() == full and full + dim == 1 and log_p.shape == (num_particles, n):
        return log_p  # already (K, N), the data plate right of the particles (one plate each): no views
    log_p = log_p.reshape((1,) * (full - log_p.dim()) + log_p.shape)
    keep = (0, full + dim)
    other = [d for d in range(full) if d not in keep]
    if other:
        log_p = log_p.sum(other, keepdim=True)
    log_p = log_p.reshape(log_p.shape[0], log_p.shape[full + dim])
    check_one_per_datapoint(name, log_p.shape[1], n)
    return log_p.expand(num_particles, n)


def check_one_per_datapoint(name: str, extent: int, n: int) -> None:
    """Raise unless a site has ``n`` entries (``extent``) along the data plate."""
    if extent != n:
        raise ValueError(
            f"site {name!r} has {extent} entries along the data plate, not one per datapoint of the batch "
            f"({n}): a pyro.plate without a size takes its size from the sites' distributions, so give that "
            "plate its size (pyro.plate('data', x.shape[0])) or give the site's distribution the batch's "
            "leading dimension"
        )


def site_log_prob_per_datapoint(site: dict, n: int, nesting: int, num_particles: int,
                                log_p: Optional[torch.Tensor] = None, plate: Optional[str] = None) -> torch.Tensor:
    """One site's (scaled, masked) log-density summed down to ``(K, N)``; ``plate`` names the
    data plate (default: the site's outermost plate)."""
    if plate is None:
        plate = data_plate({site["name"]: site}, n)
    return per_datapoint(site_log_prob(site) if log_p is None else log_p, data_dim(site, plate, n),
                         nesting, num_particles, n, site["name"])


def log_density_per_datapoint(sites: Iterable[dict], n: int, nesting: int, num_particles: int,
                              plate: Optional[str]) -> Optional[torch.Tensor]:
    """The summed log-densities of ``sites`` per particle and datapoint, ``(K, N)`` (None
    for no sites)."""
    total = None
    for site in sites:
        dim, shape = data_dim(site, plate, n), site["fn"].batch_shape
        if not site["is_observed"]:  # a latent: one draw per datapoint, not one for the batch
            check_one_per_datapoint(site["name"], shape[dim] if len(shape) >= -dim else 1, n)
        term = per_datapoint(site_log_prob(site), dim, nesting, num_particles, n, site["name"])
        total = term if total is None else total + term
    return total


def weights_from_sites(model_sites, guide_sites, n: int, nesting: int, num_particles: int,
                       declared: Optional[str] = None) -> torch.Tensor:
    """The ``(K, N)`` log-weights of one run of :func:`run_pair` under the particle plate
    (``model_sites`` / ``guide_sites``: dicts of site messages, or traces)."""
    log_p = log_density_per_datapoint(sample_sites(model_sites), n, nesting, num_particles,
                                      data_plate(model_sites, n, declared))
    if log_p is None:
        raise ValueError("the model has no sample sites")
    log_q = log_density_per_datapoint(latent_sites(guide_sites), n, nesting, num_particles,
                                      data_plate(guide_sites, n, declared))
    return log_p if log_q is None else log_p - log_q


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
    :param bool return_traces: also return ``(guide_trace, model_trace)`` (Pyro's own
        ``trace`` and ``replay``; the same numbers).
    :returns: a tensor ``(K, N)`` (differentiable: reparameterized guide draws carry
        gradients into the guide, and the model's parameters into ``log p``).
    """
    n = batch_size_of(batch)
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, guide, batch)
    declared = declared_data_plate(model)
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)):
        if not return_traces:
            guide_sites, model_sites = run_pair(model, guide, batch)
            return weights_from_sites(model_sites, guide_sites, n, max_plate_nesting, num_particles, declared)
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = weights_from_sites(model_trace, guide_trace, n, max_plate_nesting, num_particles, declared)
    return log_w, guide_trace, model_trace


# ---------------------------------------------------------------- KL terms


def analytic_kl(q_site: dict, p_site: dict, scale_site: Optional[dict] = None) -> Optional[torch.Tensor]:
    """``KL(q || p)`` of a guide site against the model's site of the same name, in the
    sites' batch shape and scaled and masked like ``scale_site`` (default: the guide's), or
    None where ``kl_divergence`` does not know the pair."""
    scale_site = q_site if scale_site is None else scale_site
    try:
        kl = kl_divergence(q_site["fn"], p_site["fn"])
    except NotImplementedError:
        return None
    if not torch.is_tensor(kl):
        kl = torch.as_tensor(kl, dtype=q_site["value"].dtype, device=q_site["value"].device)
        kl = kl.expand(q_site["fn"].batch_shape)
    return scale_and_mask(kl, scale=scale_site["scale"], mask=scale_site["mask"])


def kl_or_sampled(q, p, value: Optional[torch.Tensor] = None, num_samples: int = 1) -> Tuple[torch.Tensor, bool]:
    """``(KL(q || p), True)`` where ``kl_divergence`` knows the pair, else the Monte Carlo
    ``(log q(z) - log p(z), False)`` at ``value`` (one draw, e.g. the guide's) or averaged over
    ``num_samples`` fresh draws of q."""
    try:
        return kl_divergence(q, p), True
    except NotImplementedError:
        if value is not None:
            return q.log_prob(value) - p.log_prob(value), False
        z = q.sample((num_samples,))
        return (q.log_prob(z) - p.log_prob(z)).mean(0), False


# ---------------------------------------------------------------- one summary


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def summarize(log_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per datapoint, from log-weights ``(K, N)``: the importance-sampled ``log p(x)``
    (log-mean-exp), the effective sample size ``(sum w)^2 / sum w^2`` and the ELBO (mean)."""
    lse = torch.logsumexp(log_w, 0)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0))
    return lse - math.log(log_w.shape[0]), ess, log_w.mean(0)


def mean_and_stderr(per_datapoint: torch.Tensor) -> Tuple[float, float]:
    """The mean over datapoints and its standard error (NaN for one datapoint)."""
    values = per_datapoint.double()
    n = values.numel()
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), stderr


@contextlib.contextmanager
def eval_mode(*modules):
    """Put nn.Modules in eval mode (no dropout, no input corruption) and restore after."""
    modes = [(m, m.training) for m in modules if isinstance(m, torch.nn.Module)]
    for m, _ in modes:
        m.train(False)
    try:
        yield
    finally:
        for m, was_training in modes:
            m.train(was_training)
