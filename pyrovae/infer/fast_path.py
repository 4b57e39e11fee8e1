"""Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` losses computed on one recorded run.

For one particle, ``Trace_ELBO().differentiable_loss(model, guide, **batch)`` is

.. math:: -\\Big(\\sum_{s \\in \\text{model}} \\log p_s - \\sum_{s \\in \\text{guide}}
          \\log q_s\\Big) \\quad (+\\ \\text{score-function terms for sites without rsample}),

each term a site's scaled and masked log-density summed over its batch. Per call Pyro also
traces every ``param`` site with a copy of its message, copies both traces twice more (pruning
the plates' subsample sites), builds score parts, calls ``.item()`` on every site's
log-density (a host-device synchronization per site on a GPU, and no CUDA graph capture) and
hooks a NaN check into the backward pass. Here the guide and the replayed model run once
under :class:`~pyrovae.weights.record_sites`, and the same tensor operations give the same
loss and the same gradients, bit for bit (the tests compare them at a fixed seed), with no
host synchronization.

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
>>> bool(ours == theirs)
True

References

[1] Bingham et al. Pyro: Deep Universal Probabilistic Programming. arXiv:1810.09538
[2] Kingma, Welling. Auto-Encoding Variational Bayes. arXiv:1312.6114
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from pyro.distributions.distribution import Distribution as _PyroDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from pyrovae.infer.importance import run_pair, site_log_prob


def trace_elbo_loss(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``Trace_ELBO().differentiable_loss(model, guide, **batch)`` (one particle): the
    negative ELBO summed over the batch, with the same value and gradients."""
    guide_sites, model_sites = run_pair(model, guide, batch)
    if not _all_reparameterized(guide_sites):
        return _pyro_particle_loss(Trace_ELBO(), model_sites, guide_sites)
    # the order of the terms is Trace_ELBO's: model sites, then guide sites
    surrogate, value = 0, None
    for sign, sites in ((1, model_sites), (-1, guide_sites)):
        for site in sites.values():
            if site_is_subsample(site):
                continue
            term = site_log_prob(site).sum()
            surrogate = surrogate + term if sign > 0 else surrogate - term
            # Trace_ELBO adds the terms' values as Python floats (float64): do the same, on the device
            term = term.detach().double()
            value = (term if sign > 0 else -term) if value is None else (value + term if sign > 0 else value - term)
    if value is None:
        raise ValueError("the model and guide have no sample sites")
    surrogate = 0.0 - surrogate
    value = (-value).to(surrogate.dtype)
    return surrogate + (value - surrogate.detach())


def mean_field_elbo_loss(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``TraceMeanField_ELBO().differentiable_loss(model, guide, **batch)`` (one particle):
    the analytic KL where ``kl_divergence`` knows the pair, else the sampled one."""
    guide_sites, model_sites = run_pair(model, guide, batch)
    if not _all_reparameterized(guide_sites):
        return _pyro_particle_loss(TraceMeanField_ELBO(), model_sites, guide_sites)
    elbo = 0
    for name, model_site in model_sites.items():
        if site_is_subsample(model_site):
            continue
        if model_site["is_observed"]:
            elbo = elbo + site_log_prob(model_site).sum()
            continue
        guide_site = guide_sites[name]
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            elbo = elbo + site_log_prob(model_site).sum() - site_log_prob(guide_site).sum()
            continue
        kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
        if torch.is_tensor(kl):
            elbo = elbo - kl.sum()
        else:
            elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
    for name, guide_site in guide_sites.items():  # auxiliary guide sites
        if name not in model_sites and not site_is_subsample(guide_site):
            elbo = elbo - site_log_prob(guide_site).sum()
    if not torch.is_tensor(elbo):
        raise ValueError("the model and guide have no sample sites")
    return 0.0 - elbo


def _all_reparameterized(guide_sites: dict) -> bool:
    for site in guide_sites.values():
        if site_is_subsample(site) or site["is_observed"]:
            continue
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
