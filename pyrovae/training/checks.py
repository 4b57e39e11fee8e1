"""First-step checks: the model and guide fit together, and the data fit the likelihood.

Run once on the first batch, before anything is written. Pyro's own tools do the checking
(``pyro.util.check_model_guide_match`` on one trace of the guide and the replayed model,
each observed site's ``support.check``); their findings become one-line
:class:`~pyrovae.errors.UsageError` s that name the site. Without these checks a guide whose
site names differ from the model's trains the model on its prior, and grey levels fed to a
Bernoulli likelihood (whose ``validate_args`` is off for speed) train to a positive
"log-likelihood".
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match

from pyrovae.errors import PyrovaeError, UsageError


class FirstStepError(PyrovaeError, RuntimeError):
    """The pair failed on the first batch (nothing was written)."""


def _names(sites) -> str:
    return ", ".join(repr(n) for n in sorted(sites)) or "none"


def check_pair(model: Callable, guide: Callable, batch: Dict[str, torch.Tensor]) -> None:
    """Trace the guide and the model (replaying the guide's draws) on ``batch`` and check
    that they agree. The random streams are left as they were.

    :raises UsageError: latent sites that differ between model and guide, shapes that
        disagree, or data outside an observed site's support.
    :raises FirstStepError: the pair failed to run on the batch.
    """
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block(), pyro.validation_enabled(True):
            guide_trace = poutine.trace(guide).get_trace(**batch)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    except PyrovaeError:
        raise
    except Exception as error:
        text = " ".join(str(error).split())
        if " Trace Shapes:" in text:  # Pyro's table of every site's shapes: a screenful on one line
            text = text.split(" Trace Shapes:")[0] + " (every site's shapes: in the error's cause, which --debug shows)"
        raise FirstStepError(f"the first training step failed before anything was written: {text}") from error

    latent = {n for n, s in model_trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}
    enumerated = {n for n in latent if model_trace.nodes[n]["infer"].get("enumerate")}
    sampled = {n for n, s in guide_trace.nodes.items()
               if s["type"] == "sample" and not site_is_subsample(s) and not s["infer"].get("is_auxiliary")}
    missing, extra = latent - enumerated - sampled, sampled - latent
    if missing or extra:
        raise UsageError(
            f"the guide does not match the model: the model's latent sites are {_names(latent)}, the guide "
            f"samples {_names(sampled)} (missing {_names(missing)}, extra {_names(extra)}); name the guide's "
            "sites after the model's (unmatched, the model trains on its prior)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            check_model_guide_match(model_trace, guide_trace)
        except ValueError as error:
            raise UsageError(f"the guide does not match the model: {error}") from None

    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
            continue
        fn, value = site["fn"], site["value"]
        support = getattr(fn.support, "base_constraint", fn.support)  # elementwise where it can be
        try:
            inside = torch.as_tensor(support.check(value))
        except (NotImplementedError, AttributeError, RuntimeError, TypeError):
            continue  # a support that cannot be checked (dependent)
        if not bool(inside.all()):
            outside = value[~inside] if inside.shape == value.shape else value.flatten()
            example = float(outside.flatten()[0])
            kind = type(getattr(fn, "base_dist", fn)).__name__
            raise UsageError(
                f"the data at observed site {name!r} lie outside the support of its {kind} likelihood "
                f"({_support_name(support)}; e.g. the value {example:g}); binarize the data (--binarize dynamic; "
                "binarize='dynamic' from Python) or choose a likelihood for such values (--likelihood "
                "logistic-mixture for 8-bit grey levels, or continuous_bernoulli, where the model has them; "
                "likelihood= from Python)")


def _support_name(support) -> str:
    return type(support).__name__.lstrip("_").lower()
