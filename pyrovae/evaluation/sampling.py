"""Fresh data from a model: :math:`x \\sim p(x)` by the model's own generative process.

A model offers it in one of two ways (docs/writing-a-pair.md):

* a method ``sample(num_samples)`` returning ``(num_samples, ...)`` on the data's scale
  (images in [0, 1]). A decoder whose pixels are independent given z may show the mean of
  p(x | z) at z ~ p(z) (its ``sample`` has ``mean=True`` by default; the figure says so); an
  autoregressive decoder (``pixelcnn-vae``) draws pixel after pixel;
* else ``forward(num_samples=N)`` with no data, which returns N draws.

A model that can do neither (a conditional model, one whose prior reads other datapoints,
sequences and sets) names the reason in its ``cannot_sample`` attribute, one line that
:class:`CannotSampleError` repeats.

A user's plain Pyro model (a function with ``pyro.module``) has neither hook. Given ``like``, a
batch with the data's shapes, it is run with z ~ p(z) and its observed site's mean is shown,
after :func:`pyrovae.infer.predictive.reads_inputs` (the check ``run.sample`` makes) finds
that no site's distribution changes with the values the batch holds (an autoregressive decoder
reads them); otherwise :class:`CannotSampleError` says so. Nothing here draws from
the values of a data set: the draws are a function of the model and the random seed alone.

>>> from pyrovae.models import VAE
>>> x, title = prior_samples(VAE(x_dim=6, z_dim=2), 4)
>>> tuple(x.shape), title
((4, 6), 'mean of p(x | z), z ~ p(z)')
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence, Tuple

import pyro.poutine as poutine
import torch
from torch.distributions import constraints

from pyrovae.errors import PyrovaeError
from pyrovae.infer.importance import bind_batch, eval_mode, observed_sites

__all__ = ["CannotSampleError", "check_can_sample", "grey_scale", "observed_mean", "observed_site", "prior_samples",
           "sample_method"]

MEAN_TITLE, DRAW_TITLE = "mean of p(x | z), z ~ p(z)", "x ~ p(x)"


def observed_site(trace, site: Optional[str] = None, conditioned: Sequence[str] = ()) -> dict:
    """The observed site ``site`` of a model trace, or (``site=None``) its first observed site;
    ``conditioned`` names latent sites fixed by ``poutine.condition`` (observed in the trace too)."""
    observed = [s for s in observed_sites(trace) if s["name"] not in conditioned]
    if not observed:
        raise ValueError("the model has no observed site (obs=) to draw images from")
    if site is None:
        return observed[0]
    for candidate in observed:
        if candidate["name"] == site:
            return candidate
    raise ValueError(f"the model has no observed site {site!r}; its observed sites are "
                     f"{[s['name'] for s in observed]}")


def observed_mean(model: Callable, batch: Dict[str, torch.Tensor], guide: Optional[Callable] = None,
                  site: Optional[str] = None, return_site: bool = False):
    """The mean of the observed site ``site`` (default: the first) given z from the guide
    (reconstruction) or, with no guide, from the prior (a sample of the model); with
    ``return_site``, ``(site message, mean)``: the message holds the site's name and data."""
    modules = (model, guide)
    model = bind_batch(model, batch)
    with torch.no_grad(), eval_mode(*modules):
        if guide is not None:
            guide_trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
            model = poutine.replay(model, trace=guide_trace)
        trace = poutine.trace(model).get_trace(**batch)
    chosen = observed_site(trace, site)
    return (chosen, chosen["fn"].mean) if return_site else chosen["fn"].mean


def grey_scale(fn) -> float:
    """What to divide a site's values by to draw them in [0, 1]: ``n`` for a likelihood on the
    integers ``0..n`` (e.g. 8-bit grey levels, 255), else 1."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    support = fn.support
    if isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, constraints.integer_interval) and support.upper_bound > 1:
        return float(support.upper_bound)
    return 1.0


class CannotSampleError(PyrovaeError):
    """The model does not draw x ~ p(x) on its own; the message says why, in one line."""


def sample_method(model):
    """``model.sample`` if it takes ``num_samples`` first, else None."""
    method = getattr(model, "sample", None)
    if not callable(method):
        return None
    params = list(inspect.signature(method).parameters)
    return method if params and params[0] == "num_samples" else None


def _forward_takes_num_samples(model) -> bool:
    target = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return "num_samples" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _name(model) -> str:
    return getattr(model, "registry_name", None) or getattr(model, "__name__", None) or type(model).__name__


def check_can_sample(model, like=None) -> None:
    """Raise :class:`CannotSampleError` (one line, the model's ``cannot_sample`` reason) unless
    :func:`prior_samples` can draw from ``model`` (a model without a sampling hook: only
    given ``like``, a batch with the data's shapes)."""
    reason = getattr(model, "cannot_sample", None)
    if reason or (sample_method(model) is None and not _forward_takes_num_samples(model) and like is None):
        reason = reason or "it has no sample(num_samples) method and its forward takes no num_samples"
        raise CannotSampleError(f"model {_name(model)!r} does not draw x ~ p(x) on its own: {reason}")


def _mean_at_prior(model, like: dict, num_samples: int) -> torch.Tensor:
    """The observed site's mean at z ~ p(z), with ``like``'s shapes and ``num_samples`` rows;
    :class:`CannotSampleError` where it depends on the values the batch holds."""
    import pyro

    from pyrovae.infer.predictive import reads_inputs

    rows = {k: torch.zeros_like(v[:1]).expand(num_samples, *v.shape[1:]) for k, v in like.items()}
    seed = int(torch.randint(2 ** 31, ()))
    with eval_mode(model):
        changed, _ = reads_inputs(model, rows, list(rows))
    if changed:
        raise CannotSampleError(
            f"model {_name(model)!r} does not draw x ~ p(x) on its own: its generative process reads the observed "
            "values (an autoregressive decoder?); give it a sample(num_samples) method (docs/writing-a-pair.md)")
    pyro.set_rng_seed(seed)
    chosen, mean = observed_mean(model, rows, return_site=True)
    return mean / grey_scale(chosen["fn"])


@torch.no_grad()
def prior_samples(model, num_samples: int, like=None) -> Tuple[torch.Tensor, str]:
    """``(x, title)``: ``num_samples`` draws of the model's generative process and what they
    are (``"x ~ p(x)"``, or ``"mean of p(x | z), z ~ p(z)"`` for a model whose ``sample``
    shows the likelihood's mean).

    :param dict like: for a model with neither hook (a user's plain Pyro model), a batch with
        the data's shapes (its values are not read; see above).
    :raises CannotSampleError: the model offers neither ``sample(num_samples)`` nor
        ``forward(num_samples=)`` (nor, given ``like``, a process that ignores the observed
        values); the message is the model's ``cannot_sample`` line.
    """
    check_can_sample(model, like)
    method = sample_method(model)
    if method is None and not _forward_takes_num_samples(model):
        return _mean_at_prior(model, like, num_samples), MEAN_TITLE
    with eval_mode(model):
        if method is not None:
            mean = inspect.signature(method).parameters.get("mean")
            shows_mean = mean is not None and mean.default is True
            return method(num_samples), MEAN_TITLE if shows_mean else DRAW_TITLE
        return model(num_samples=num_samples), DRAW_TITLE
