"""The pieces of one training step: the pair's parameters, the loss as a torch module, the
optimizer, the step.

:func:`collect_parameters` finds every tensor a pair trains, whether it lives in an nn.Module
or in Pyro's param store (plain functions using ``pyro.param`` / ``pyro.module``).

:class:`LossModule` holds a model/guide pair and an objective; ``forward(batch, step)`` is the
objective's loss and ``parameters()`` are every tensor the pair trains (its nn.Module
parameters and the ``pyro.param`` values it uses), so that an optimizer, ``torch.compile``
or ``DistributedDataParallel`` can wrap it like any torch module. :class:`TrainStep` is one
optimizer step on one batch (forward, backward, Adam), optionally under bf16 autocast.

While a :class:`TrainStep` runs, the pair's ``PyroModule`` s issue no ``pyro.module`` /
``pyro.param`` statement for their own parameters (:class:`quiet_pyro_modules`): the
statements cost a message through the effect stack and a parameter-store lookup per
parameter per step, and the loop already holds every parameter. Sample sites, plates and
any ``pyro.param`` written in a program body are untouched, and the loss and gradients are
the same (the tests compare them).

>>> import torch
>>> from pyrovae.models import VAE
>>> from pyrovae.guides import DiagNormalGuide
>>> from pyrovae.infer.objectives import ELBO
>>> module = LossModule(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), ELBO())
>>> step = TrainStep(module, make_optimizer(list(module.parameters()), lr=1e-3, device="cpu"))
>>> loss = step({"x": torch.bernoulli(torch.full((4, 6), 0.5))}, 0)
>>> loss.shape
torch.Size([])
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.infer.fast_path import quiet_pyro_modules  # noqa: F401  (re-exported: it lives in the fast path)
from pyrovae.infer.importance import preserved_rng

PRECISIONS = ("fp32", "bf16")


def collect_parameters(loss: Callable[[], torch.Tensor], modules) -> tuple:
    """The trainable tensors of a pair: nn.Module parameters, then the unconstrained values of
    ``pyro.param`` sites that are not module parameters (in trace order).

    A param-store entry left by an earlier pair with the same name as a module parameter would
    silently be trained instead of the module's own tensor; such stale entries are dropped.

    :returns: ``(params, store_params)`` with store_params a dict name -> tensor.
    """
    store = pyro.get_param_store()
    for _ in range(2):
        with preserved_rng(), poutine.trace(param_only=True) as tracer:
            loss()
        stale, found = [], {}
        for name, site in tracer.trace.nodes.items():
            if site["type"] != "param":
                continue
            value = site["value"]
            unconstrained = value.unconstrained() if hasattr(value, "unconstrained") else value
            init = site["args"][1] if len(site["args"]) > 1 else None
            if isinstance(init, torch.nn.Parameter) and unconstrained is not init:
                stale.append(name)
            elif unconstrained.requires_grad:
                found[name] = unconstrained
        if not stale:
            break
        for name in stale:
            del store[name]
    module_params = []
    for module in modules:
        module_params += [p for p in module.parameters() if p.requires_grad]
    seen = {id(p) for p in module_params}
    store_params = {name: p for name, p in found.items() if id(p) not in seen}
    return module_params + list(store_params.values()), store_params


def as_store_parameters(store_params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Mark the param-store tensors ``store_params`` (name -> unconstrained tensor) as
    parameters, in place: ``isinstance(t, nn.Parameter)`` becomes true (torch's ``_is_param``
    flag) while each stays the very tensor the param store holds, so a module can register
    it and ``pyro.param(name)`` keeps using it.
    """
    for value in store_params.values():
        if not isinstance(value, torch.nn.Parameter):
            if value.grad_fn is not None or not value.requires_grad:
                raise ValueError("a param-store tensor to train must be a leaf that requires grad")
            value._is_param = True
    return dict(store_params)


class LossModule(torch.nn.Module):
    """The loss of a model/guide pair under an objective, as a torch module.

    :param callable model: the model (an nn.Module is registered as a submodule).
    :param callable guide: the guide (likewise).
    :param callable objective: ``objective(model, guide, batch, step) -> loss``.
    :param dict store_params: ``pyro.param`` tensors the pair uses beyond its modules'
        parameters (registered as parameters, see :func:`as_store_parameters`).
    :param callable call_model: what the objective calls as the model (default ``model``;
        e.g. the model restricted to the batch keys it accepts).
    :param callable call_guide: likewise for the guide.
    """

    def __init__(self, model: Callable, guide: Callable, objective: Callable,
                 store_params: Optional[Dict[str, torch.Tensor]] = None,
                 call_model: Optional[Callable] = None, call_guide: Optional[Callable] = None):
        super().__init__()
        self.pair = torch.nn.ModuleList([m for m in (model, guide) if isinstance(m, torch.nn.Module)])
        # a list, not a dict: Pyro names (``encoder$$$0.weight``) are not module attribute names
        self.store = torch.nn.ParameterList(as_store_parameters(store_params or {}).values())
        self.objective = objective
        self.call_model = call_model if call_model is not None else model
        self.call_guide = call_guide if call_guide is not None else guide

    def forward(self, batch: Dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return self.objective(self.call_model, self.call_guide, batch, step)


def make_optimizer(params, lr: float, device, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam with torch's fused kernel (one kernel for all parameters, on CPU and CUDA), else
    the multi-tensor ``foreach`` version. ``capturable`` keeps its step count on the device,
    as a CUDA graph capture needs."""
    device = torch.device(device)
    options = {"capturable": True} if capturable and device.type == "cuda" else {}
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **options)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=device.type != "cpu" or None, **options)


def autocast(device, precision: str):
    """A context for the forward pass in ``precision``: ``fp32`` (none) or ``bf16``
    (``torch.autocast``; matrix products in bfloat16, reductions and log-densities in float32
    where torch's autocast lists say so)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' needs a GPU with bfloat16 support (Ampere or newer); use fp32")
    # no weight-cast cache: it is not allowed while a CUDA graph is captured
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


class TrainStep:
    """One optimizer step: ``loss = module(batch, step)``, ``zero_grad``, ``backward``,
    ``optimizer.step()``; returns the detached loss (a device tensor: no synchronization).

    :param torch.nn.Module module: a :class:`LossModule` (or a ``DistributedDataParallel``
        around one).
    :param optimizer: the optimizer of its parameters.
    :param str precision: ``fp32`` or ``bf16`` (autocast of the forward pass).
    :param quiet: a :class:`quiet_pyro_modules` for the pair, or None.
    :param device: the device of the data.
    """

    def __init__(self, module, optimizer, precision: str = "fp32", quiet=None, device="cpu"):
        self.module, self.optimizer, self.precision = module, optimizer, precision
        self.quiet = quiet if quiet is not None else contextlib.nullcontext()
        self.device = torch.device(device)
        self.autocast = autocast(self.device, precision)  # checked now, not at the first step; reusable
        self.loss_scale = 1.0  # data-parallel shards of unequal size weight their losses

    def __call__(self, batch: Dict[str, torch.Tensor], step: int) -> torch.Tensor:
        with self.quiet, self.autocast:
            loss = self.module(batch, step)
        if self.loss_scale != 1.0:
            loss = loss * self.loss_scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
