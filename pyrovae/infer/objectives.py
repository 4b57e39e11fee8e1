"""Training objectives: small objects the training loop calls.

An objective maps ``(model, guide, batch, step)`` to a differentiable scalar: the negative
bound **per datapoint** (the batch mean), so learning rates do not depend on the batch size.
Where Pyro has the objective it is used as is (``Trace_ELBO``, ``TraceMeanField_ELBO``);
the importance-weighted family is written over :func:`pyrovae.infer.importance.log_weights`
because Pyro's ``RenyiELBO`` has no ``differentiable_loss``; the tests check it against
``RenyiELBO`` (same loss and gradients at the same seed).

Every objective takes ``beta`` (the weight of the latent sites' log-densities, i.e. of the
KL term: beta-VAE) and ``warmup_steps`` (linear KL warm-up from 0 to ``beta``, as in
Bowman et al.), implemented by scaling the latent sites with :func:`scale_latents`.

An objective declares its options as models and guides do (:class:`pyrovae.registry.Configurable`):
the fields of its ``Options`` dataclass, described by the ``:param`` lines of its docstring,
choices as ``Literal`` types, validated in ``__post_init__``. ``pyrovae fit`` makes them flags
(``num_particles`` is ``--particles``, ``warmup_steps`` ``--kl-warmup``: a field's
``metadata={"flag": ...}``), and run.json records them (:func:`objective_record`).

``elbo`` and ``iwae`` take ``gradient``: ``"plain"`` (the default), ``"stl"`` (log q at stopped
guide parameters, sticking the landing [6]; unbiased for the ELBO, biased for IWAE with K > 1)
and, for ``iwae``, ``"dreg"`` (doubly reparameterized [7]: the guide's gradient
``sum_k w~_k^2 d log w_k`` with log q at stopped parameters, the model's the plain one). The
loss value is the plain one; see :func:`stopped_log_prob` for how and where it applies.

References

[1] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
[2] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519
[3] Li, Turner. Renyi Divergence Variational Inference. arXiv:1602.02311
[4] Bowman et al. Generating Sentences from a Continuous Space. arXiv:1511.06349
[5] Higgins et al. beta-VAE. ICLR 2017
[6] Roeder, Wu, Duvenaud. Sticking the Landing. arXiv:1703.09194
[7] Tucker, Lawson, Gu, Maddison. Doubly Reparameterized Gradient Estimators. arXiv:1810.04152
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Literal, Optional

import pyro
import torch
from torch.utils.checkpoint import checkpoint
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.infer.util import is_validation_enabled

from pyrovae.infer.fast_path import (
    PYRO_INTERNALS_SUPPORTED, _has_score_function, mean_field_elbo_loss, trace_elbo_loss,
)
from pyrovae.registry import Configurable, options_of, register_objective
from pyrovae.infer.importance import (
    PARTICLE_PLATE, batch_size_of, data_dim, data_plate, declared_data_plate, guess_max_plate_nesting,
    kl_or_sampled, latent_sites, log_density_per_datapoint, log_mean_exp, log_weights, per_datapoint,
    record_sites, run_pair, sample_sites, site_log_prob, weights_from_sites,
)


class ScaleLatentsMessenger(Messenger):
    """Multiply the log-density of every *latent* sample site by ``scale``.

    Applied to both model and guide, the ELBO becomes
    ``E_q[log p(x|z)] - scale * KL(q(z|x) || p(z))``; observed sites are untouched.

    :param float scale: the KL weight (or a 0-dim tensor: :meth:`Objective.weight_as_input`).
    """

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


def scale_latents(fn: Optional[Callable] = None, scale: float = 1.0):
    """The handler of :class:`ScaleLatentsMessenger`, used like ``poutine.scale``:
    ``scale_latents(model, scale=0.5)``, or ``with scale_latents(scale=0.5):``.

    >>> import pyro.distributions as dist
    >>> def model():
    ...     pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> trace = poutine.trace(scale_latents(model, scale=0.5)).get_trace()
    >>> trace.nodes["z"]["scale"]
    0.5
    """
    messenger = ScaleLatentsMessenger(scale)
    return messenger if fn is None else messenger(fn)


def particles(default: int):
    """The ``num_particles`` field of an objective's options: ``--particles`` on the command line."""
    return field(default=default, metadata={"flag": "particles"})


def check_particles(num_particles, least: int = 1, name: str = "num_particles") -> None:
    if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < least:
        raise ValueError(f"the objective needs {name} >= {least} (an integer), got {num_particles!r}")


class Objective(Configurable):
    """Base class. Subclasses implement :meth:`loss` and extend :class:`Objective.Options`.

    :param float beta: weight of the KL term (1 is the true bound).
    :param int warmup_steps: linear warm-up of the KL weight from 0 to ``beta`` over this
        many optimizer steps (0: no warm-up).
    """

    name = "objective"
    #: fit lets the pair's PyroModules skip their per-parameter ``pyro.param`` statements
    #: while this objective runs (pyrovae.infer.fast_path.quiet_pyro_modules); an objective that reads
    #: ``param`` sites from a trace sets this to False
    quiet_modules = True
    #: the CPU replay (pyrovae.training.replay) may record a warm-up step with the KL weight as
    #: a tensor input (:meth:`weight_as_input`), so the warm-up's steps replay too; False for
    #: an objective whose loss reads the weight on the host (TraceEnum_ELBO checks that the
    #: enumerated sites share one scale with ``float(scale)``): its warm-up steps run eagerly
    weight_as_input = True
    _weight_input: Optional[torch.Tensor] = None

    @dataclass(kw_only=True)
    class Options:
        beta: float = 1.0
        warmup_steps: int = field(default=0, metadata={"flag": "kl-warmup"})

        def __post_init__(self):
            if not self.beta >= 0:
                raise ValueError(f"beta must be >= 0, got {self.beta}")
            if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
                raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = float(self.options.beta)
        self.warmup_steps = int(self.options.warmup_steps)

    def kl_weight(self, step: Optional[int] = None) -> float:
        """The KL weight at optimizer step ``step`` (the full ``beta`` when step is None;
        inside :meth:`weight_as_input`, its tensor whatever the step)."""
        if self._weight_input is not None:
            return self._weight_input
        if step is None or self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / self.warmup_steps)

    @contextlib.contextmanager
    def weight_as_input(self, weight: torch.Tensor):
        """While a step is recorded for replay: the KL weight is ``weight``, a 0-dim tensor the
        recording takes as an input, so that each replay passes the weight of its own step.

        >>> objective = ELBO(warmup_steps=10)
        >>> with objective.weight_as_input(torch.tensor(0.25)):
        ...     objective.kl_weight(3)
        tensor(0.2500)
        >>> objective.kl_weight(3)
        0.4
        """
        self._weight_input = weight
        try:
            yield
        finally:
            self._weight_input = None

    def __call__(self, model: Callable, guide: Callable, batch: Dict[str, torch.Tensor],
                 step: Optional[int] = None) -> torch.Tensor:
        model, guide = self.weighted(model, guide, step)
        return self.loss(model, guide, batch)

    def weighted(self, model: Callable, guide: Callable, step: Optional[int] = None) -> tuple:
        """The pair with its latent sites scaled by the KL weight at ``step`` (unchanged at 1)."""
        weight = self.kl_weight(step)
        if not isinstance(weight, torch.Tensor) and weight == 1.0:
            return model, guide
        return scale_latents(model, scale=weight), scale_latents(guide, scale=weight)

    def loss(self, model, guide, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError



def objective_record(objective) -> Optional[dict]:
    """run.json's ``objective`` entry: ``{"name": ..., **options}``, the options that rebuild
    ``objective`` (None for an objective that is not an :class:`Objective`).

    >>> objective_record(IWAE(num_particles=3))
    {'name': 'iwae', 'beta': 1.0, 'warmup_steps': 0, 'num_particles': 3, 'particle_chunk': 0, 'gradient': 'plain'}
    """
    if not isinstance(objective, Objective):
        return None
    return {"name": objective.name, **(options_of(objective) or {})}


@register_objective("elbo")
class ELBO(Objective):
    """The evidence lower bound with Pyro's ``Trace_ELBO`` (sampled KL).

    :param int num_particles: Monte Carlo samples per datapoint (vectorized).
    :param str gradient: the guide's gradient estimator: ``plain``, or ``stl`` (sticking the
        landing: log q at stopped guide parameters).
    """

    name = "elbo"
    _pyro_elbo = Trace_ELBO

    @dataclass
    class Options(Objective.Options):
        num_particles: int = particles(1)
        gradient: Literal["plain", "stl"] = "plain"

        def __post_init__(self):
            super().__post_init__()
            check_particles(self.num_particles)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient = self.options.gradient
        self.num_particles = int(self.options.num_particles)
        self._elbo = self._pyro_elbo(
            num_particles=self.num_particles, vectorize_particles=self.num_particles > 1
        )
        self._nesting: Dict[tuple, int] = {}

    def loss(self, model, guide, batch):
        if self.gradient == "stl":
            return self._stl_loss(model, guide, batch)
        # one particle, validation off: the same loss and gradients from one recorded run
        # (pyrovae.infer.fast_path); Pyro's own path keeps its checks and several particles
        lean = _LEAN_LOSSES.get(type(self._elbo))
        if lean is not None and self.num_particles == 1 and PYRO_INTERNALS_SUPPORTED and not is_validation_enabled() \
                and not isinstance(poutine.unwrap(guide), Messenger):
            return lean(model, guide, batch, batch_size_of(batch))
        return self._elbo.differentiable_loss(model, guide, **batch) / batch_size_of(batch)

    def _stl_loss(self, model, guide, batch):
        """The ELBO with the score term of the guide's density dropped (sticking the landing)."""
        n, k = batch_size_of(batch), self.num_particles
        if k == 1:
            guide_sites, model_sites = run_pair(model, guide, batch)
        else:
            key = (id(poutine.unwrap(model)), id(poutine.unwrap(guide)))
            if key not in self._nesting:
                self._nesting[key] = guess_max_plate_nesting(model, guide, batch)
            with pyro.plate(PARTICLE_PLATE, k, dim=-(self._nesting[key] + 1)):
                guide_sites, model_sites = run_pair(model, guide, batch)
        check_path_gradient(guide_sites, self.name, self.gradient)
        elbo = 0.0
        for site in sample_sites(model_sites):
            elbo = elbo + site_log_prob(site).sum()
        for site in latent_sites(guide_sites):
            elbo = elbo - stopped_log_prob(site).sum()
        if not torch.is_tensor(elbo):
            raise ValueError("the model and guide have no sample sites")
        return -elbo / (k * n)


_LEAN_LOSSES = {Trace_ELBO: trace_elbo_loss, TraceMeanField_ELBO: mean_field_elbo_loss}


@register_objective("meanfield")
class MeanFieldELBO(ELBO):
    """The ELBO with the analytic KL where Pyro knows it (``TraceMeanField_ELBO``).

    :param str gradient: ``plain`` only: the analytic KL has no score term to drop.
    """

    name = "meanfield"
    _pyro_elbo = TraceMeanField_ELBO

    @dataclass
    class Options(ELBO.Options):
        gradient: Literal["plain"] = "plain"


@dataclass
class _ImportanceOptions(Objective.Options):
    """The particles of the importance-weighted bounds (``renyi``, ``iwae``)."""

    num_particles: int = particles(5)
    particle_chunk: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_particles(self.num_particles)
        if not isinstance(self.particle_chunk, int) or self.particle_chunk < 0:
            raise ValueError(f"particle_chunk must be >= 0 (0: all particles at once), got {self.particle_chunk}")


@register_objective("renyi")
class RenyiBound(Objective):
    """The variational Renyi bound, per datapoint, with ``K`` vectorized particles:

    .. math:: \\mathcal{L}_\\alpha(x) = \\frac{1}{1-\\alpha}
              \\log \\frac{1}{K} \\sum_k w_k^{1-\\alpha},
              \\qquad w_k = \\frac{p(x, z_k)}{q(z_k \\mid x)}.

    ``alpha = 0`` is the IWAE bound of Burda et al.; ``alpha -> 1`` is the ELBO.
    The log-sum-exp is taken per datapoint, over particles only.

    With ``particle_chunk = C < K`` the particles are drawn C at a time and each chunk's
    activations are dropped after its forward pass and recomputed (same random draws) during
    the backward pass (``torch.utils.checkpoint``): the gradient is the same, the memory holds
    one chunk's activations instead of K's, and the forward pass runs twice.

    :param float alpha: the Renyi order (not 1).
    :param int num_particles: K.
    :param int particle_chunk: particles per chunk when training (0: all K at once).
    """

    name = "renyi"

    @dataclass
    class Options(_ImportanceOptions):
        alpha: float = 0.0

        def __post_init__(self):
            super().__post_init__()
            if self.alpha == 1:
                raise ValueError("alpha = 1 is the ELBO: use the 'elbo' objective")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = float(getattr(self.options, "alpha", 0.0))  # IWAE's options have no alpha: 0
        self.num_particles = int(self.options.num_particles)
        self.particle_chunk = int(self.options.particle_chunk)
        self._nesting: Dict[tuple, int] = {}

    def per_datapoint(self, model, guide, batch, step=None) -> torch.Tensor:
        """The (KL-weighted at ``step``) bound for each datapoint, shape (N,)."""
        key = (id(model), id(guide))
        if key not in self._nesting:
            self._nesting[key] = guess_max_plate_nesting(model, guide, batch), declared_data_plate(model)
        model, guide = self.weighted(model, guide, step)
        (nesting, declared), chunk = self._nesting[key], self.particle_chunk
        if self.gradient != "plain":
            return self._path_gradient_bound(model, guide, batch, nesting, declared)
        if is_validation_enabled():
            log_w, guide_trace, _ = log_weights(
                model, guide, batch, self.num_particles, max_plate_nesting=nesting, return_traces=True,
            )  # (K, N)
            _check_reparameterized(guide_trace, self.name)
        elif chunk and chunk < self.num_particles and torch.is_grad_enabled():
            log_w = torch.cat([
                checkpoint(self._chunk_log_weights, model, guide, batch, min(chunk, self.num_particles - k0), nesting,
                           declared, False, use_reentrant=False, preserve_rng_state=True)
                for k0 in range(0, self.num_particles, chunk)
            ])  # (K, N), one chunk of activations alive at a time
        else:
            log_w = self._log_weights(model, guide, batch, self.num_particles, nesting, declared)
        one_minus_alpha = 1.0 - self.alpha
        if one_minus_alpha == 1.0:  # IWAE: the scaling by 1 is the identity, skip its two operations
            return log_mean_exp(log_w, 0)
        return log_mean_exp(one_minus_alpha * log_w, 0) / one_minus_alpha

    #: the gradient estimator (the Renyi bound itself keeps the plain one)
    gradient = "plain"

    def _path_gradient_bound(self, model, guide, batch, nesting, declared) -> torch.Tensor:
        """The bound per datapoint, (N,), with the value of the plain one and the gradient of
        ``self.gradient``: ``stl`` (log q at stopped guide parameters) or ``dreg`` (the guide's
        path gradients weighted by the squared normalized weights; the model's as plain)."""
        n, k = batch_size_of(batch), self.num_particles
        with pyro.plate(PARTICLE_PLATE, k, dim=-(nesting + 1)):
            with record_sites() as guide_run:
                guide(**batch)
            guide_sites = guide_run.sites
            check_path_gradient(guide_sites, self.name, self.gradient)
            holder, guide_plate = {}, data_plate(guide_sites, n, declared)
            if self.gradient == "dreg":
                # z enters log w through a copy whose incoming gradient is scaled by w~_k in the
                # backward pass: the path term then gets w~_k^2, the model's parameters w~_k
                replay = dict(guide_sites)
                for site in latent_sites(guide_sites):
                    replay[site["name"]] = {**site, "value": _ScaleGradient.apply(site["value"], holder, site, nesting,
                                                                                  guide_plate, n)}
            else:
                replay = guide_sites
            with record_sites(replay=replay) as model_run:
                model(**batch)
        model_sites = model_run.sites
        log_p = log_density_per_datapoint(sample_sites(model_sites), n, nesting, k,
                                          data_plate(model_sites, n, declared))
        if log_p is None:
            raise ValueError("the model has no sample sites")
        log_q = None
        for site in latent_sites(guide_sites):
            stopped = stopped_log_prob(site, replay[site["name"]]["value"])
            term = per_datapoint(stopped, data_dim(site, guide_plate, n), nesting, k, n, site["name"])
            log_q = term if log_q is None else log_q + term
        log_w = log_p if log_q is None else log_p - log_q  # (K, N), the plain log-weights' values
        one_minus_alpha = 1.0 - self.alpha
        bound = log_mean_exp(one_minus_alpha * log_w, 0) / one_minus_alpha
        if self.gradient == "stl":
            return bound
        weights = torch.softmax(log_w.detach(), 0)  # w~ (K, N)
        holder["weights"] = weights
        surrogate = (weights * log_w).sum(0)
        return bound.detach() + (surrogate - surrogate.detach())

    def _chunk_log_weights(self, model, guide, batch, num_particles, nesting, declared, validation) -> torch.Tensor:
        """One chunk's log-weights under the validation setting of the forward pass (the backward
        pass recomputes them, maybe outside it: the same operations either way)."""
        with pyro.validation_enabled(validation):
            return self._log_weights(model, guide, batch, num_particles, nesting, declared)

    def _log_weights(self, model, guide, batch, num_particles, nesting, declared=None) -> torch.Tensor:
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(nesting + 1)):
            guide_sites, model_sites = run_pair(model, guide, batch)
        _check_reparameterized(guide_sites, self.name)
        return weights_from_sites(model_sites, guide_sites, batch_size_of(batch), nesting, num_particles, declared)

    def __call__(self, model, guide, batch, step=None):
        return -self.per_datapoint(model, guide, batch, step).mean()


@register_objective("iwae")
class IWAE(RenyiBound):
    """The importance-weighted bound of Burda et al. (the Renyi bound with alpha = 0).

    :param int num_particles: K, importance samples per datapoint.
    :param int particle_chunk: particles per chunk when training (0: all K at once).
    :param str gradient: the guide's gradient estimator: ``plain``, ``stl`` (sticking the
        landing; biased for K > 1) or ``dreg`` (doubly reparameterized).
    """

    name = "iwae"

    @dataclass
    class Options(_ImportanceOptions):
        gradient: Literal["plain", "stl", "dreg"] = "plain"

        def __post_init__(self):
            super().__post_init__()
            if self.gradient != "plain" and self.particle_chunk and self.particle_chunk < self.num_particles:
                raise ValueError(f"gradient={self.gradient!r} needs all particles at once: leave particle_chunk at 0")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient = self.options.gradient


def _check_reparameterized(guide_sites, name):
    """``guide_sites``: a guide trace, or a dict of its sample-site messages."""
    for site in latent_sites(guide_sites):
        if not site["fn"].has_rsample:
            raise NotImplementedError(
                f"the {name!r} objective needs reparameterized guide sites, but site "
                f"{site['name']!r} ({type(site['fn']).__name__}) has no rsample; use the "
                "'elbo' objective (score-function gradients) or enumerate the site"
            )


# ---------------------------------------------------------------- path-derivative gradients


def check_path_gradient(guide_sites, name: str, gradient: str) -> None:
    """A one-line error where the ``stl``/``dreg`` estimators do not apply: every latent guide
    site must be reparameterized, with no score-function term of its own."""
    for site in latent_sites(guide_sites):
        fn = site["fn"]
        if not fn.has_rsample or site["infer"].get("enumerate") or _has_score_function(fn):
            raise NotImplementedError(
                f"gradient={gradient!r} of the {name!r} objective needs reparameterized guide sites without "
                f"score-function terms, but site {site['name']!r} is a {type(fn).__name__} that "
                f"{'has no rsample' if not fn.has_rsample else 'is enumerated' if site['infer'].get('enumerate') else 'adds a score-function term'}; "
                "use gradient='plain'"
            )


def stopped_log_prob(site: dict, value: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A guide site's (scaled, masked) ``log q(z)`` at its draw ``z`` (or ``value``, a tensor of the
    same numbers) with the value of ``log q`` and the gradient of ``log q`` at *stopped*
    parameters: only the path through ``z`` (Roeder et al.). Written as
    ``log q_phi(z) - log q_phi(stop(z)) + stop(log q_phi(stop(z)))``: the second term removes
    the score ``d/dphi log q_phi(z)``, so it works for every distribution whose ``log_prob``
    takes any point, whatever holds its parameters (an MLP, a flow); planar and radial flows,
    whose ``log_prob`` works only on their latest draw, cannot (a one-line error)."""
    fn = site["fn"]
    z = site["value"] if value is None else value
    try:
        at_z = fn.log_prob(z, *site["args"], **site["kwargs"])
        score = fn.log_prob(z.detach(), *site["args"], **site["kwargs"])
    except NotImplementedError as error:
        raise NotImplementedError(
            f"gradient='stl'/'dreg' evaluates log q of site {site['name']!r} at a copy of its draw, which "
            f"{type(fn).__name__} cannot ({error}); use gradient='plain'"
        ) from None
    log_q = at_z - score + score.detach()
    return scale_and_mask(log_q, site["scale"], site["mask"])


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; in the backward pass the gradient is multiplied by the
    normalized weights ``holder["weights"]`` (K, N), set after the forward pass (DReG), laid
    along the value's particle and data dims."""

    @staticmethod
    def forward(ctx, value, holder, site, nesting, plate, n):
        batch_dims = len(site["fn"].batch_shape)
        ctx.holder, ctx.n = holder, n
        ctx.dims = (batch_dims - (nesting + 1), batch_dims + data_dim(site, plate, n))  # particles < data
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        weights = ctx.holder.get("weights")
        if weights is None:
            raise RuntimeError("DReG: the weights were not set before the backward pass")
        shape = [1] * grad.dim()
        shape[ctx.dims[0]], shape[ctx.dims[1]] = weights.shape
        return grad * weights.reshape(shape).to(grad.dtype), None, None, None, None, None


def make_objective(objective, **options) -> Objective:
    """An :class:`Objective` from a registered name (with options) or an instance."""
    if isinstance(objective, Objective):
        if options:
            raise ValueError("options are given with the objective's constructor, not here")
        return objective
    if isinstance(objective, str):
        from pyrovae.registry import build, get_objective

        return build(get_objective(objective), options)
    if callable(objective):
        return objective
    raise TypeError(f"objective must be a name or an Objective, got {type(objective).__name__}")


@register_objective("free-bits")
class FreeBitsELBO(Objective):
    """The ELBO with free bits (Kingma et al. 2016): the KL of each latent *group* is clamped
    below at ``lambda`` nats, after averaging it over the batch,

    .. math:: \\widetilde{\\mathcal L} = \\frac1N \\sum_n \\mathbb E_q[\\log p(x_n \\mid z_n)]
              - \\beta \\sum_g \\max\\Big(\\lambda,\\ \\frac1N \\sum_n
              \\operatorname{KL}\\big(q(z_{n,g} \\mid x_n)\\,\\|\\,p(z_{n,g})\\big)\\Big).

    A group is a latent site, or (``free_bits_groups = G``) one of ``G`` contiguous blocks of
    a site's latent dimensions (``torch.tensor_split`` of its last axis; needs a guide and a
    prior that factorize over those dimensions, such as ``Normal(...).to_event(1)``). A group
    whose KL is below ``lambda`` gets no gradient from the KL term, so the encoder is free to
    use those nats: this keeps latent units from collapsing to the prior early in training.
    The KL is analytic where ``kl_divergence`` knows the pair, else the one-sample estimate
    ``log q(z|x) - log p(z)`` at the guide's draw. ``free_bits = 0`` is exactly the ELBO
    (with the analytic KL where known: the ``meanfield`` objective), with no clamp.

    Reported losses are the clamped objective, not a bound: evaluate with
    :func:`pyrovae.evaluation.log_likelihood.log_likelihood`.

    :param float free_bits: lambda, nats per group (>= 0).
    :param int free_bits_groups: 0 for one group per latent site, else G groups per site.

    >>> objective = FreeBitsELBO(free_bits=0.5, free_bits_groups=2)
    >>> objective.options.free_bits
    0.5

    References

    [1] Kingma et al. Improving Variational Inference with Inverse Autoregressive Flow.
        arXiv:1606.04934 (appendix, "free bits")
    """

    name = "free-bits"

    @dataclass
    class Options(Objective.Options):
        free_bits: float = 0.0
        free_bits_groups: int = 0

        def __post_init__(self):
            super().__post_init__()
            if not self.free_bits >= 0:
                raise ValueError(f"free_bits (lambda, nats per group) must be >= 0, got {self.free_bits}")
            if not isinstance(self.free_bits_groups, int) or self.free_bits_groups < 0:
                raise ValueError(f"free_bits_groups must be an integer >= 0 (0: one group per site), "
                                 f"got {self.free_bits_groups!r}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.free_bits = float(self.options.free_bits)
        self.free_bits_groups = self.options.free_bits_groups

    def __call__(self, model, guide, batch, step=None):
        return self.loss(model, guide, batch, self.kl_weight(step))

    def group_kls(self, model, guide, batch) -> tuple:
        """``(reconstruction, {group name: batch-mean KL})``: the per-datapoint mean of
        ``log p(x | z)`` (observed sites) and the unclamped KL of every group."""
        n = batch_size_of(batch)
        guide_trace = poutine.trace(guide).get_trace(**batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
        _check_reparameterized(guide_trace, self.name)
        reconstruction, kls = 0.0, {}
        for site in sample_sites(model_trace):
            name = site["name"]
            q_site = guide_trace.nodes.get(name)
            if site["is_observed"] or q_site is None:
                log_p = site_log_prob(site)
                reconstruction = reconstruction + log_p.sum() / n
                continue
            kl = self._site_kl(q_site, site)  # (..., G) with groups, else (...)
            if self.free_bits_groups:
                for g, block in enumerate(torch.tensor_split(kl, self.free_bits_groups, dim=-1)):
                    kls[f"{name}[{g}]"] = block.sum() / n
            else:
                kls[name] = kl.sum() / n
        return reconstruction, kls

    def _site_kl(self, q_site, p_site) -> torch.Tensor:
        q, p, z, mask = q_site["fn"], p_site["fn"], q_site["value"], p_site["mask"]
        if self.free_bits_groups:
            q, p = _factorized(q), _factorized(p)
            if q is None or p is None:
                raise ValueError(
                    f"free_bits_groups={self.free_bits_groups} splits the dimensions of site "
                    f"{p_site['name']!r}, but its guide or prior does not factorize over them "
                    f"({type(q_site['fn']).__name__} / {type(p_site['fn']).__name__}); use "
                    "free_bits_groups=0 (one group per site) or a factorized family"
                )
            if q.batch_shape[-1] < self.free_bits_groups:
                raise ValueError(f"site {p_site['name']!r} has {q.batch_shape[-1]} dimensions, fewer than "
                                 f"free_bits_groups={self.free_bits_groups}")
            if isinstance(mask, torch.Tensor):
                mask = mask.unsqueeze(-1)
        kl, _ = kl_or_sampled(q, p, value=z)
        return scale_and_mask(kl, p_site["scale"], mask)

    def loss(self, model, guide, batch, weight: float = 1.0) -> torch.Tensor:
        reconstruction, kls = self.group_kls(model, guide, batch)
        kl = 0.0
        for value in kls.values():
            kl = kl + (value.clamp(min=self.free_bits) if self.free_bits > 0 else value)
        return -(reconstruction - weight * kl)


def _factorized(fn):
    """The distribution with the latent dimensions as its last *batch* axis, or None when
    ``fn`` does not factorize over them (only ``Independent`` over one axis does here)."""
    if isinstance(fn, dist.Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist
    return None
