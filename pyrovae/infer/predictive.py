"""Draws from a fitted pair with :class:`pyro.infer.Predictive`: the prior predictive
``x ~ p(x)`` and the amortized posterior ``z ~ q(z | x)`` with its predictive ``x' ~ p(x | z)``.

``Predictive(model)()`` alone fails for a pair whose model takes its data as keyword arguments
(``missing x``), and returns an observed site as the data it was given. Both draws here call
the model on a batch of ``n`` rows under :func:`pyro.poutine.uncondition`, so every site,
observed ones included, is drawn afresh; the rows of the batch stand in for the data the
model reads only for its shape (the checkpoint's example row, repeated).

A model whose draws read the values of its inputs (a conditional model such as ``cvae``, or a
decoder that reads x itself, as an autoregressive one does) cannot draw x ~ p(x) this way:
:func:`prior_predictive` checks that, by drawing twice with the same seed from two different
stand-ins, and asks for the inputs instead.

>>> import torch
>>> from pyrovae.models import VAE
>>> draws = prior_predictive(VAE(6, 2), {"x": torch.zeros(1, 6)}, 5)
>>> sorted(draws), tuple(draws["x"].shape), tuple(draws["z"].shape)
(['x', 'z'], (5, 6), (5, 2))
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional

import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive

from pyrovae.errors import UsageError
from pyrovae.infer.importance import bind_batch, eval_mode

__all__ = ["posterior_predictive", "prior_predictive", "reads_inputs"]


@contextlib.contextmanager
def _evaluating(*fns):
    """No gradients, nn.Modules in eval mode (no dropout), restored after."""
    with eval_mode(*fns), torch.no_grad(), pyro.validation_enabled(False):
        yield


def _draw(model: Callable, batch: dict, guide: Optional[Callable] = None, num_samples: int = 1) -> Dict[str, torch.Tensor]:
    predictive = Predictive(poutine.uncondition(bind_batch(model, batch)), guide=guide and bind_batch(guide, batch),
                            num_samples=num_samples, parallel=False)
    return predictive(**batch)


def _stand_in(example: dict, n: int, inputs: dict) -> dict:
    """``n`` rows: the given ``inputs``, else the example row repeated."""
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor) or value.shape[:1] != (n,):
            raise UsageError(f"input {key!r} must be a tensor of {n} rows (one per sample), got "
                             f"{tuple(getattr(value, 'shape', ()))}")
    rows = {k: v[:1].expand(n, *v.shape[1:]).clone() for k, v in example.items() if k not in inputs}
    return {**rows, **inputs}


def prior_predictive(model: Callable, example: dict, num_samples: int = 1, **inputs) -> Dict[str, torch.Tensor]:
    """``num_samples`` draws of every site of ``model``'s generative process, by
    ``Predictive(poutine.uncondition(model))`` on a batch of ``num_samples`` rows.

    :param model: a Pyro model taking its batch as keyword arguments.
    :param dict example: one row of a batch (what the model reads for shapes), e.g. a run's
        checkpoint example.
    :param int num_samples: rows drawn.
    :param inputs: tensors of ``num_samples`` rows the model conditions on (a conditional
        model's input, labels), used instead of the example.
    :returns: ``{site: (num_samples, ...)}`` for every sample site (latent and observed).
    :raises UsageError: the draws depend on an input that was not given (a conditional model,
        or a decoder that reads x itself).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"num_samples must be a positive integer, got {num_samples!r}")
    batch = _stand_in(example, num_samples, inputs)
    with _evaluating(model):
        draws = _draw(model, batch)
        changed, read = reads_inputs(model, batch, [k for k in batch if k not in inputs])
    if changed:
        raise UsageError(
            f"the model's distributions of {', '.join(map(repr, changed))} depend on the values of its input "
            f"{' and '.join(map(repr, read))} (a conditional model, or a decoder that reads x itself, as an "
            f"autoregressive one does), so its draws are not x ~ p(x): pass the inputs to condition on "
            f"({read[0]}=a tensor of {num_samples} rows), or draw with the model's own sampler (pyrovae sample)")
    return {name: value.squeeze(0) for name, value in draws.items()}


def reads_inputs(model: Callable, batch: dict, stand_ins: list):
    """The sites whose distribution changes when the stand-in inputs ``stand_ins`` of ``batch``
    (those holding real numbers) change, each site scored at the same value; and those inputs."""
    read = [k for k in stand_ins if batch[k].is_floating_point()]
    if not read:
        return [], read
    other = {**batch, **{k: torch.rand_like(batch[k]) for k in read}}
    unconditioned = poutine.uncondition(bind_batch(model, batch))
    with poutine.block():
        first = poutine.trace(unconditioned).get_trace(**batch)
        second = poutine.trace(poutine.replay(unconditioned, trace=first)).get_trace(**other)
    changed = []
    for name, site in first.nodes.items():
        if site["type"] != "sample" or name not in second.nodes:
            continue
        a, b = site["fn"].log_prob(site["value"]), second.nodes[name]["fn"].log_prob(site["value"])
        if not torch.allclose(a, b, rtol=1e-5, atol=1e-5, equal_nan=True):
            changed.append(name)
    return changed, read


def posterior_predictive(model: Callable, guide: Callable, data, num_samples: int = 1) -> Dict[str, torch.Tensor]:
    """Latents from the guide, ``z ~ q(z | x)``, and every observed site drawn afresh from the
    model given them, ``x' ~ p(x | z)`` (reconstructions), by ``Predictive(uncondition(model),
    guide=guide)``.

    :param data: a tensor (passed as ``x``) or a dict of named tensors, rows are datapoints.
    :param int num_samples: draws per datapoint.
    :returns: ``{site: (num_samples, N, ...)}`` for every sample site.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"num_samples must be a positive integer, got {num_samples!r}")
    batch = dict(data) if isinstance(data, dict) else {"x": data}
    with _evaluating(model, guide):
        return _draw(model, batch, guide, num_samples)
