"""The fast path: the one module that reaches into Pyro's internals.

It holds Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` losses computed on one recorded run,
and :func:`quiet_pyro_modules` (with its lean ``pyro.plate``). The internals it relies on (checked by
:func:`pyro_internals_supported`, and by tests/infer/test_fast_path.py against the installed
Pyro): ``Trace_ELBO._differentiable_loss_particle(model_trace, guide_trace)``,
``Trace.add_node`` / ``compute_score_parts``, ``Distribution.score_parts``, a
``PyroModule``'s ``_pyro_context`` (a ``_Context`` with ``active``, ``cache``, ``used``,
``get``, ``set``) and the param store's ``_params`` / ``_constraints`` dicts. Where they are
not as expected, every caller takes Pyro's own path: the objectives call
``differentiable_loss`` and the modules keep their statements.

For one particle, ``Trace_ELBO().differentiable_loss(model, guide, **batch)`` is

.. math:: -\\Big(\\sum_{s \\in \\text{model}} \\log p_s - \\sum_{s \\in \\text{guide}}
          \\log q_s\\Big) \\quad (+\\ \\text{score-function terms for sites without rsample}),

each term a site's scaled and masked log-density summed over its batch. Per call Pyro also
traces every ``param`` site with a copy of its message, copies both traces twice more (pruning
the plates' subsample sites), builds score parts, calls ``.item()`` on every site's
log-density (a host-device synchronization per site on a GPU, and no CUDA graph capture) and
hooks a NaN check into the backward pass. Here the guide and the replayed model run once
under :func:`~pyrovae.infer.importance.record_sites`, and the same tensor operations give the same
gradients, bit for bit, and the same loss to float rounding (the tests compare them at a fixed
seed), with no host synchronization; except that a reparameterized ``Normal`` guide site takes
its ``log q`` from the noise of its draw (:func:`~pyrovae.infer.importance.noise_log_prob`, as
a hand-written step does): the guide's gradients are then the same to float rounding.

Guides with a site that has no ``rsample`` (score-function gradients) or that is enumerated
go through Pyro's own ``_differentiable_loss_particle`` on the same recorded run, so every
guide gets the numbers ``Trace_ELBO`` would give. The caller keeps Pyro's path where its
checks matter (validation on) and for several vectorized particles.

>>> import pyro, pyro.distributions as dist, torch
>>> def model(x):
...     with pyro.plate("data", len(x)):
...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
>>> def guide(x):
...     with pyro.plate("data", len(x)):
...         pyro.sample("z", dist.Normal(x / 2, 0.7))
>>> x = torch.randn(5)
>>> pyro.set_rng_seed(0); ours = trace_elbo_loss(model, guide, {"x": x})
>>> pyro.set_rng_seed(0); theirs = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x=x)
>>> bool(torch.allclose(ours, theirs))
True

References

[1] Bingham et al. Pyro: Deep Universal Probabilistic Programming. arXiv:1810.09538
[2] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
"""

from __future__ import annotations

from typing import Callable, Dict

import pyro
import torch
from pyro.distributions.distribution import Distribution as _PyroDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.trace_struct import Trace
from pyro.nn import PyroModule
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER as _MODULE_DIVIDER
from torch.distributions import constraints as _constraints
from pyro.poutine.util import site_is_subsample
import pyro.distributions.torch as _torch_wrappers
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.subsample_messenger import SubsampleMessenger

from pyrovae.infer.importance import analytic_kl, latent_sites, run_pair, sample_sites, site_log_prob


def trace_elbo_loss(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor], divide_by: int = 1) -> torch.Tensor:
    """``Trace_ELBO().differentiable_loss(model, guide, **batch) / divide_by`` (one particle): the
    negative ELBO summed over the batch, with the same gradients (bit for bit; the guide's to
    float rounding where log q comes from a Normal draw's noise) and the same value to float
    rounding.

    Pyro's value is its surrogate's gradient carrier plus a correction to the float64 sum of
    the sites' ``.item()`` s; here the value is the surrogate itself, summed in the tensors'
    dtype (the correction cost a detach, a cast and an add per site, and four more operations
    on the loss, each in the forward and backward pass). Where the sites' log-densities have
    one shape (a VAE's, one per datapoint), they are added up elementwise and summed once,
    instead of summed one by one and added. The gradient flows through the same terms with the
    same weights, ``-1 / divide_by`` each, either way."""
    guide_sites, model_sites = run_pair(model, guide, batch)
    if not _all_reparameterized(guide_sites):
        loss = _pyro_particle_loss(Trace_ELBO(), model_sites, guide_sites)
        return loss if divide_by == 1 else loss / divide_by
    # the order of the terms is Trace_ELBO's: model sites, then guide sites
    terms = [(1, site_log_prob(site)) for site in sample_sites(model_sites)]
    terms += [(-1, site_log_prob(site)) for site in sample_sites(guide_sites)]
    if not terms:
        raise ValueError("the model and guide have no sample sites")
    shape = terms[0][1].shape
    if len(terms) > 1 and all(term.shape == shape for _, term in terms):
        elbo = _signed_total(terms).sum()
    else:
        elbo = _signed_total([(sign, term.sum()) for sign, term in terms])
    return _negated(elbo, divide_by)


def _signed_total(terms: list) -> torch.Tensor:
    """``sum(sign * term)`` over ``(sign, term)`` pairs, added up in order."""
    total = None
    for sign, term in terms:
        total = (term if sign > 0 else -term) if total is None else (total + term if sign > 0 else total - term)
    return total


def _negated(elbo: torch.Tensor, divide_by: int) -> torch.Tensor:
    """``-elbo / divide_by`` in one operation: ``elbo / -divide_by`` has the same bits, forward and
    backward (division rounds the same either side of zero)."""
    return -elbo if divide_by == 1 else elbo / -divide_by


def mean_field_elbo_loss(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor], divide_by: int = 1) -> torch.Tensor:
    """``TraceMeanField_ELBO().differentiable_loss(model, guide, **batch) / divide_by`` (one
    particle): the analytic KL where ``kl_divergence`` knows the pair, else the sampled one."""
    guide_sites, model_sites = run_pair(model, guide, batch)
    if not _all_reparameterized(guide_sites):
        loss = _pyro_particle_loss(TraceMeanField_ELBO(), model_sites, guide_sites)
        return loss if divide_by == 1 else loss / divide_by
    terms = []  # (sign, term) in Pyro's order; added up as Pyro does, without its leading ``0 +``
    for model_site in sample_sites(model_sites):
        if model_site["is_observed"]:
            terms.append((1, site_log_prob(model_site).sum()))
            continue
        guide_site = guide_sites[model_site["name"]]
        kl = analytic_kl(guide_site, model_site)
        if kl is None:  # the sampled KL, summed as Pyro does
            terms += [(1, site_log_prob(model_site).sum()), (-1, site_log_prob(guide_site).sum())]
        else:
            terms.append((-1, kl.sum()))
    for guide_site in sample_sites(guide_sites):  # auxiliary guide sites
        if guide_site["name"] not in model_sites:
            terms.append((-1, site_log_prob(guide_site).sum()))
    if not terms:
        raise ValueError("the model and guide have no sample sites")
    return _negated(_signed_total(terms), divide_by)


def _all_reparameterized(guide_sites: dict) -> bool:
    for site in latent_sites(guide_sites):
        if not site["fn"].has_rsample or site["infer"].get("enumerate") or _has_score_function(site["fn"]):
            return False
    return True


_DEFAULT_SCORE_PARTS = _PyroDistribution.score_parts


def _has_score_function(fn) -> bool:
    """Whether a distribution adds its own score-function term (``score_parts`` overridden, e.g.
    the von Mises-Fisher's rejection-sampler correction), looking through expand and mask."""
    while isinstance(fn, (ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return getattr(type(fn), "score_parts", _DEFAULT_SCORE_PARTS) is not _DEFAULT_SCORE_PARTS


def _pyro_particle_loss(elbo, model_sites: dict, guide_sites: dict) -> torch.Tensor:
    """Pyro's own surrogate on the recorded run (score-function terms included), combined as
    ``differentiable_loss`` does for one particle."""
    traces = []
    for sites in (model_sites, guide_sites):
        trace = Trace()
        for name, site in sites.items():
            if not site_is_subsample(site):
                trace.add_node(name, **site)
        traces.append(trace)
    model_trace, guide_trace = traces
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    loss, surrogate = elbo._differentiable_loss_particle(model_trace, guide_trace)
    surrogate = 0.0 + surrogate
    return (0.0 + loss) + (surrogate - torch_item(surrogate))


# ---------------------------------------------------------------- Pyro's internals, checked


def pyro_internals_supported() -> bool:
    """Whether the installed Pyro has the internals this module relies on (see the module
    docs); tests/infer/test_fast_path.py says which one changed."""
    return not missing_pyro_internals()


def missing_pyro_internals() -> list:
    """The internals (as ``"name: what was expected"``) that the installed Pyro lacks."""
    import inspect

    missing = []
    for elbo in (Trace_ELBO, TraceMeanField_ELBO):
        method = getattr(elbo, "_differentiable_loss_particle", None)
        if method is None or list(inspect.signature(method).parameters) != ["self", "model_trace", "guide_trace"]:
            missing.append(f"{elbo.__name__}._differentiable_loss_particle(self, model_trace, guide_trace)")
    for name in ("add_node", "compute_log_prob", "compute_score_parts"):
        if not callable(getattr(Trace, name, None)):
            missing.append(f"pyro.poutine.Trace.{name}")
    if not callable(getattr(_PyroDistribution, "score_parts", None)):
        missing.append("pyro.distributions.Distribution.score_parts")
    store = pyro.get_param_store()
    if not (isinstance(getattr(store, "_params", None), dict) and isinstance(getattr(store, "_constraints", None), dict)):
        missing.append("pyro.params.ParamStoreDict._params and _constraints (dicts by name)")
    if not callable(getattr(pyro.primitives, "module", None)) or pyro.module is not pyro.primitives.module:
        missing.append("pyro.module (= pyro.primitives.module)")
    plate = getattr(pyro.primitives, "plate", None)
    if plate is None or pyro.plate is not plate or not issubclass(plate, SubsampleMessenger) \
            or not callable(getattr(BroadcastMessenger, "_pyro_sample", None)):
        missing.append("pyro.plate (= pyro.primitives.plate, a SubsampleMessenger broadcasting with "
                       "BroadcastMessenger._pyro_sample)")
    context = PyroModule().__dict__.get("_pyro_context")
    if context is None or not all(hasattr(context, a) for a in ("active", "cache", "used", "get", "set")):
        missing.append("PyroModule._pyro_context (a _Context with active, cache, used, get, set)")
    return missing


PYRO_INTERNALS_SUPPORTED = pyro_internals_supported()
_PYRO_MODULE = pyro.primitives.module  # Pyro's own statement
_PYRO_PLATE = pyro.primitives.plate
_REAL = _constraints.real


class _LeanPlate(_PYRO_PLATE):
    """``pyro.plate`` that does not expand a distribution to the batch shape it already has.

    Pyro's plate broadcasts every sample site's distribution to the shape its plates give it,
    ``fn.expand(target)``, even where ``target`` is ``fn.batch_shape`` already (a guide's
    ``Normal(loc, scale)`` of the batch's rows, a likelihood of the decoder's output): two new
    distribution objects per site with views of the same parameters. Here such a site keeps
    its own distribution object, for the distributions Pyro wraps from torch (whose
    ``expand`` to the same shape only copies); everything else (the frame, the scale, any
    other broadcast or shape error) is Pyro's own code."""

    def _process_message(self, msg):
        SubsampleMessenger._process_message(self, msg)
        if msg["type"] == "sample" and not msg["done"] and type(msg["fn"]).__module__ == _TORCH_WRAPPERS:
            shape = msg["fn"].batch_shape
            for frame in msg["cond_indep_stack"]:
                if frame.dim is not None and frame.size != -1 and (len(shape) < -frame.dim or shape[frame.dim] != frame.size):
                    break
            else:
                return  # Pyro's target shape is the batch shape: its expand would copy
        BroadcastMessenger._pyro_sample(msg)


_TORCH_WRAPPERS = _torch_wrappers.__name__  # pyro.distributions.torch: Pyro's classes of torch's distributions


class _QuietContext:
    """Stands in for a PyroModule's call context: never active, so attribute access returns
    the module's own tensors without issuing ``pyro.param`` / ``pyro.module`` statements."""

    active = 0
    used = False

    def __init__(self):
        self.cache = {}

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None

    def get(self, name):
        return None

    def set(self, name, value):
        return None


def _quiet_module(name: str, nn_module, update_module_params: bool = False):
    """``pyro.module(name, nn_module)`` where it would change nothing: when Pyro's param store
    holds every trainable parameter of ``nn_module`` under its Pyro name, as that very tensor,
    unconstrained, the statement would find each one there and return ``nn_module``, so this
    returns it at once; otherwise (a new module, a parameter replaced, a frozen one) Pyro's
    own statement runs."""
    store = pyro.get_param_store()
    params, constraints_ = store._params, store._constraints
    prefix = name + _MODULE_DIVIDER
    for param_name, value in _named_parameters(nn_module):
        full = prefix + param_name
        if not value.requires_grad or params.get(full) is not value or constraints_.get(full) is not _REAL:
            return _PYRO_MODULE(name, nn_module, update_module_params)
    return nn_module


def _named_parameters(module, prefix: str = "", seen=None, visited=None) -> list:
    """``list(module.named_parameters())`` (the same names, order and deduplication), read
    from the modules' ``_parameters`` / ``_modules`` dicts: a twentieth of the time of torch's
    generators, which were most of a quiet statement's cost."""
    seen = set() if seen is None else seen
    visited = set() if visited is None else visited
    out = []
    if id(module) in visited:
        return out
    visited.add(id(module))
    for key, value in module._parameters.items():
        if value is not None and id(value) not in seen:
            seen.add(id(value))
            out.append((prefix + key, value))
    for key, child in module._modules.items():
        if child is not None:
            out += _named_parameters(child, prefix + key + ".", seen, visited)
    return out


def module_statements(fn: Callable) -> list:
    """The nn.Modules named by ``pyro.module`` statements while ``fn()`` runs (each once, in
    the order first named); the statements themselves run as Pyro's."""
    found = []

    def recording(name, nn_module, update_module_params=False):
        if all(m is not nn_module for m in found):
            found.append(nn_module)
        return _PYRO_MODULE(name, nn_module, update_module_params)

    saved = pyro.module, pyro.primitives.module
    pyro.module = pyro.primitives.module = recording
    try:
        fn()
    finally:
        pyro.module, pyro.primitives.module = saved
    return found


class quiet_pyro_modules:
    """While active, the ``PyroModule`` s in ``modules`` (and their submodules) issue no
    ``pyro.param`` / ``pyro.module`` statements for their own parameters, and a
    ``pyro.module(name, m)`` statement in a program's body (a plain-function pair) returns
    ``m`` at once where Pyro's param store already holds every trainable parameter of ``m``
    as that very tensor (where the statement would change nothing; else Pyro's own runs), and
    ``pyro.plate`` leaves a distribution that already has its plates' batch shape as it is
    instead of expanding it to that same shape (:class:`_LeanPlate`; else Pyro's own plate).

    Used only where nothing reads those statements: the training step, whose parameters are
    all in the optimizer. The PyroModules stay as they are (``enabled`` is False) when a
    module holds ``PyroSample`` attributes (they need the call context); neither part acts
    when Pyro's ``module_local_params`` setting is on, or when Pyro's internals are not the
    ones this was written for (``statements`` is False then). ``pyro.module`` and
    ``pyro.plate`` are swapped for the duration, so a program that imported ``module`` or
    ``plate`` from Pyro by name keeps Pyro's.

    :param modules: models, guides (anything; non-PyroModules are ignored).
    """

    def __init__(self, *modules):
        self.modules = []
        seen = set()
        for obj in modules:
            if not isinstance(obj, torch.nn.Module):
                continue
            for m in obj.modules():
                if isinstance(m, PyroModule) and id(m) not in seen:
                    seen.add(id(m))
                    self.modules.append(m)
        self.statements = not pyro.settings.get("module_local_params") and PYRO_INTERNALS_SUPPORTED
        self.enabled = bool(self.modules) and self._supported()
        self._quiet = _QuietContext()
        self._saved = None
        self._saved_module = []

    def _supported(self) -> bool:
        if not self.statements:
            return False
        for m in self.modules:
            context = m.__dict__.get("_pyro_context")
            if context is None or not hasattr(context, "active") or m.__dict__.get("_pyro_samples"):
                return False
        return True

    def __enter__(self):
        if self.enabled:
            self._saved = [m.__dict__["_pyro_context"] for m in self.modules]
            for m in self.modules:
                m.__dict__["_pyro_context"] = self._quiet
        if self.statements:
            self._saved_module.append((pyro.module, pyro.primitives.module, pyro.plate))
            pyro.module = pyro.primitives.module = _quiet_module
            pyro.plate = _LeanPlate
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            for m, context in zip(self.modules, self._saved):
                m.__dict__["_pyro_context"] = context
            self._saved = None
        if self._saved_module:
            pyro.module, pyro.primitives.module, pyro.plate = self._saved_module.pop()
        return None
