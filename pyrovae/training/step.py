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
import os
from typing import Callable, Dict, Optional

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.errors import UsageError
from pyrovae.infer.fast_path import module_statements, quiet_pyro_modules  # noqa: F401  (quiet_pyro_modules re-exported)
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


def pair_networks(model, guide, run: Optional[Callable[[], object]] = None) -> list:
    """The networks of a pair, what ``compile=True`` compiles: the nn.Modules with parameters
    held by the model or guide (looking inside PyroModules, containers and Pyro's transform
    modules, whose own code issues Pyro statements or has no ``forward``), and those that
    ``pyro.module`` statements name while ``run()`` runs (a plain-function pair's). The model
    and guide themselves are not networks: their bodies are Pyro programs."""
    from pyro.distributions.torch_transform import TransformModule
    from pyro.nn import PyroModule

    tops = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    found: list = []

    def add(module):
        if any(module is m for m in found) or any(module is t for t in tops):
            return
        if not any(True for _ in module.parameters()):
            return
        container = (isinstance(module, (PyroModule, TransformModule))
                     or type(module).forward is torch.nn.Module.forward)
        if container:
            for child in module.children():
                add(child)
        else:
            found.append(module)

    for top in tops:
        for child in top.children():
            add(child)
    if run is not None:
        for module in module_statements(run):
            add(module)
    return found


class compiled_networks:
    """While active, each of ``networks`` runs ``torch.compile`` of its ``forward`` (compiled at
    its first call, again for a new shape); outside, the modules are as they were (nothing is
    changed in their state dicts or checkpoints). Pyro's statements around the networks stay
    eager.

    :param networks: nn.Modules (e.g. :func:`pair_networks`).
    :param dict options: passed to ``torch.compile``.
    """

    def __init__(self, networks, **options):
        self.networks = list(networks)
        self.compiled = [torch.compile(m.forward, **options) for m in self.networks]
        # every compiled bound method runs through one wrapper function of dynamo's, whose cache
        # holds one entry per network class (and input shapes): past dynamo's recompile_limit (8)
        # the rest would run eagerly, silently; allow 8 per network
        self.limit = 8 * max(1, len(self.networks))
        self._saved = None

    def __enter__(self):
        import torch._dynamo.config as dynamo_config

        self._saved = dynamo_config.recompile_limit
        dynamo_config.recompile_limit = max(self._saved, self.limit)
        for module, forward in zip(self.networks, self.compiled):
            module.__dict__["forward"] = forward
        return self

    def __exit__(self, *exc):
        import torch._dynamo.config as dynamo_config

        for module in self.networks:
            module.__dict__.pop("forward", None)
        dynamo_config.recompile_limit = self._saved
        return None


def check_compilable(device, distributed: bool) -> None:
    """Refuse ``compile=True`` where it does not apply, in one line: the compiled step is for
    the CPU (a GPU captures the step in a CUDA graph) in one process, and torch's CPU
    compiler needs a C++ compiler."""
    import shutil

    if torch.device(device).type != "cpu":
        raise UsageError("compile=True (--compile) compiles the CPU step; on a GPU fit captures the step in a CUDA "
                         "graph instead: drop --compile or use --device cpu")
    if distributed:
        raise UsageError("compile=True (--compile) is for one process; drop it for a data-parallel run")
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise UsageError(f"compile=True (--compile) needs a C++ compiler ({compiler}) on PATH for torch.compile; "
                         "install one (e.g. g++) or drop --compile")


def check_compiled(module, quiet, compiled: compiled_networks, batch: Dict[str, torch.Tensor]) -> None:
    """Compile the networks on ``batch`` and compare the loss with the eager one at the same
    draws (to float rounding); a pair that cannot be compiled is refused in one line."""
    quiet = quiet if quiet is not None else contextlib.nullcontext()
    with preserved_rng(), quiet:
        eager = module(batch, 0).detach()
    try:
        with preserved_rng(), quiet, compiled:
            loss = module(batch, 0).detach()
    except Exception as error:  # noqa: BLE001 - torch.compile raises many kinds; all mean: not compilable
        message = " ".join(str(error).split())[:300]
        raise UsageError(f"compile=True (--compile): this pair's networks cannot be compiled "
                         f"({type(error).__name__}: {message}); drop --compile") from None
    if not torch.allclose(loss, eager, rtol=1e-4, atol=1e-4):
        raise UsageError(f"compile=True (--compile): the compiled networks give another loss ({float(loss):.6g}, "
                         f"eager {float(eager):.6g}); drop --compile")


class TrainStep:
    """One optimizer step: ``loss = module(batch, step)``, ``zero_grad``, ``backward``,
    ``optimizer.step()``; returns the detached loss (a device tensor: no synchronization).

    :param torch.nn.Module module: a :class:`LossModule` (or a ``DistributedDataParallel``
        around one).
    :param optimizer: the optimizer of its parameters.
    :param str precision: ``fp32`` or ``bf16`` (autocast of the forward pass).
    :param quiet: a :class:`quiet_pyro_modules` for the pair, or None.
    :param device: the device of the data.
    :param compiled: a :class:`compiled_networks` for the pair, or None (eager).
    """

    def __init__(self, module, optimizer, precision: str = "fp32", quiet=None, device="cpu", compiled=None):
        self.module, self.optimizer, self.precision = module, optimizer, precision
        self.quiet = quiet if quiet is not None else contextlib.nullcontext()
        self.compiled = compiled if compiled is not None else contextlib.nullcontext()
        self.device = torch.device(device)
        self.autocast = autocast(self.device, precision)  # checked now, not at the first step; reusable
        self.loss_scale = 1.0  # data-parallel shards of unequal size weight their losses

    def __call__(self, batch: Dict[str, torch.Tensor], step: int) -> torch.Tensor:
        with self.quiet, self.compiled, self.autocast:
            loss = self.module(batch, step)
        if self.loss_scale != 1.0:
            loss = loss * self.loss_scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
