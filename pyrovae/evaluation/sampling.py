"""Fresh data from a model: :math:`x \\sim p(x)` by the model's own generative process.

A model offers it in one of two ways (docs/writing-a-pair.md):

* a method ``sample(num_samples)`` returning ``(num_samples, ...)`` on the data's scale
  (images in [0, 1]). A decoder whose pixels are independent given z may show the mean of
  p(x | z) at z ~ p(z) (its ``sample`` has ``mean=True`` by default; the figure says so); an
  autoregressive decoder (``pixelcnn-vae``) draws pixel after pixel;
* else ``forward(num_samples=N)`` with no data, which returns N draws.

A model that can do neither (a conditional model, one whose prior reads other datapoints,
sequences and sets) names the reason in its ``cannot_sample`` attribute, one line that
:class:`CannotSampleError` repeats. Nothing here reads a data set: the draws are a function of
the model and the random seed alone.

>>> from pyrovae.models import VAE
>>> x, title = prior_samples(VAE(x_dim=6, z_dim=2), 4)
>>> tuple(x.shape), title
((4, 6), 'mean of p(x | z), z ~ p(z)')
"""

from __future__ import annotations

import inspect
from typing import Tuple

import torch

from pyrovae.errors import PyrovaeError

__all__ = ["CannotSampleError", "check_can_sample", "prior_samples", "sample_method"]

MEAN_TITLE, DRAW_TITLE = "mean of p(x | z), z ~ p(z)", "x ~ p(x)"


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


def check_can_sample(model) -> None:
    """Raise :class:`CannotSampleError` (one line, the model's ``cannot_sample`` reason) unless
    :func:`prior_samples` can draw from ``model``."""
    reason = getattr(model, "cannot_sample", None)
    if reason or (sample_method(model) is None and not _forward_takes_num_samples(model)):
        name = getattr(model, "registry_name", None) or getattr(model, "__name__", None) or type(model).__name__
        reason = reason or "it has no sample(num_samples) method and its forward takes no num_samples"
        raise CannotSampleError(f"model {name!r} does not draw x ~ p(x) on its own: {reason}")


@torch.no_grad()
def prior_samples(model, num_samples: int) -> Tuple[torch.Tensor, str]:
    """``(x, title)``: ``num_samples`` draws of the model's generative process and what they
    are (``"x ~ p(x)"``, or ``"mean of p(x | z), z ~ p(z)"`` for a model whose ``sample``
    shows the likelihood's mean).

    :raises CannotSampleError: the model offers neither ``sample(num_samples)`` nor
        ``forward(num_samples=)``; the message is the model's ``cannot_sample`` line.
    """
    from pyrovae.evaluation.log_likelihood import eval_mode

    check_can_sample(model)
    method = sample_method(model)
    with eval_mode(model):
        if method is not None:
            mean = inspect.signature(method).parameters.get("mean")
            shows_mean = mean is not None and mean.default is True
            return method(num_samples), MEAN_TITLE if shows_mean else DRAW_TITLE
        return model(num_samples=num_samples), DRAW_TITLE
