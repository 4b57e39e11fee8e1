"""A pair's parameters in a checkpoint, and back: module state and Pyro's param store.

The suite's pairs are ``nn.Module`` s: their ``state_dict`` is saved. A user's plain
functions keep parameters in Pyro's param store (``pyro.param``, ``pyro.module``): each
entry is saved as its unconstrained tensor with its constraint *by name*
(:func:`constraint_name`, e.g. ``"positive"``, ``"interval(0.0, 1.0)"``), because a
constraint object is code and a checkpoint holds data only.

:func:`load_parameters` restores them through Pyro's public API in any process:

- an entry already in the store is overwritten in place (an optimizer keeps its reference);
- ``pyro.param`` entries are declared with ``ParamStoreDict.set_state`` (value and constraint);
- ``pyro.module`` entries (``name$$$weight``) belong to a module the program holds: the pair is
  run once on the checkpoint's example row, so that ``pyro.module`` registers the module's own
  tensors, and the saved values are then copied into them (``pyro.module`` does not copy the
  store's values into a module by default).

>>> from torch.distributions import constraints
>>> constraint_name(constraints.interval(0.0, 2.0))
'interval(0.0, 2.0)'
>>> constraint_from_name('independent(positive, 1)').reinterpreted_batch_ndims
1
"""

from __future__ import annotations

import re
import warnings
from typing import Callable, Dict, Optional

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints

from pyrovae.errors import UsageError

_NAMED = {name: getattr(constraints, name) for name in (
    "real", "real_vector", "positive", "nonnegative", "unit_interval", "simplex", "lower_cholesky",
    "lower_triangular", "positive_definite", "positive_semidefinite", "corr_cholesky", "corr_matrix",
    "ordered_vector", "positive_ordered_vector", "softplus_positive", "softplus_lower_cholesky", "sphere",
    "unit_lower_cholesky", "symmetric", "boolean",
)}
_BOUNDS = {  # parametrized constraints: class name -> (name, bound attributes)
    "_Interval": ("interval", ("lower_bound", "upper_bound")),
    "_HalfOpenInterval": ("half_open_interval", ("lower_bound", "upper_bound")),
    "_GreaterThan": ("greater_than", ("lower_bound",)),
    "_GreaterThanEq": ("greater_than_eq", ("lower_bound",)),
    "_LessThan": ("less_than", ("upper_bound",)),
}


def constraint_name(constraint) -> Optional[str]:
    """A constraint's name, with its bounds (``"greater_than(0.001)"``), or None if it has none."""
    for name, known in _NAMED.items():
        if constraint is known or type(constraint) is type(known) and name == "real":
            return name
    kind = type(constraint).__name__
    if kind in _BOUNDS:
        name, attrs = _BOUNDS[kind]
        bounds = [getattr(constraint, a) for a in attrs]
        if any(isinstance(b, torch.Tensor) and b.numel() != 1 for b in bounds):
            return None
        return f"{name}({', '.join(repr(float(b)) for b in bounds)})"
    if kind == "_IndependentConstraint":
        base = constraint_name(constraint.base_constraint)
        return None if base is None else f"independent({base}, {constraint.reinterpreted_batch_ndims})"
    return None


def constraint_from_name(name: str):
    """The constraint :func:`constraint_name` named."""
    if name in _NAMED:
        return _NAMED[name]
    match = re.fullmatch(r"(\w+)\((.*)\)", name)
    if match is None:
        raise ValueError(f"unknown constraint {name!r}")
    kind, args = match.groups()
    if kind == "independent":
        base, ndims = args.rsplit(",", 1)
        return constraints.independent(constraint_from_name(base.strip()), int(ndims))
    return getattr(constraints, kind)(*(float(a) for a in args.split(",")))


def parameter_state(model, guide, store_params: Dict[str, torch.Tensor], copy: bool = False) -> dict:
    """What a checkpoint keeps of a pair: module state dicts and param-store entries (the
    param-store entries always copied; the modules' tensors too with ``copy``, for a state kept
    while training goes on, as fit's best weights)."""
    store = pyro.get_param_store()
    saved_constraints = store.get_state()["constraints"]

    def modules(obj):
        if not isinstance(obj, torch.nn.Module):
            return {}
        state = obj.state_dict()
        return {name: value.detach().clone() for name, value in state.items()} if copy else state

    return {
        "model": modules(model),
        "guide": modules(guide),
        "param_store": {name: p.detach().clone() for name, p in store_params.items()},
        "param_constraints": {name: constraint_name(saved_constraints.get(name, constraints.real))
                              for name in store_params},
    }


def load_parameters(checkpoint: dict, model: Callable, guide: Callable, where: str = "the checkpoint") -> None:
    """Copy a checkpoint's parameters into the pair, in place where they already exist (an
    optimizer's references stay valid), declaring the param-store entries that do not.

    :raises UsageError: a parameter whose shape differs from the checkpoint's.
    """
    for obj, key in ((model, "model"), (guide, "guide")):
        if isinstance(obj, torch.nn.Module):
            try:
                obj.load_state_dict(checkpoint[key])
            except RuntimeError as error:
                detail = str(error).strip().splitlines()[-1].strip()
                raise UsageError(f"the {key} does not match the one in {where} ({detail}); build it with the "
                                 "run's options, or start a new run") from None
    saved = checkpoint.get("param_store", {})
    names = checkpoint.get("param_constraints", {})
    store = pyro.get_param_store()
    missing = [name for name in saved if name not in store]
    declare = {n: saved[n] for n in missing if "$$$" not in n and names.get(n) is not None}
    if declare:  # pyro.param entries: value and constraint
        store.set_state({"params": {n: v.detach().clone().requires_grad_(True) for n, v in declare.items()},
                         "constraints": {n: constraint_from_name(names[n]) for n in declare}})
    if any(n not in store for n in saved) and checkpoint.get("example"):
        device = next(iter(saved.values())).device
        _register(model, guide, {k: v.to(device) for k, v in checkpoint["example"].items()})  # pyro.module entries: the module's own tensors
    with torch.no_grad():
        for name, value in saved.items():
            if name not in store:
                warnings.warn(f"parameter {name!r} of {where} is not used by this pair's first step; it is "
                              "kept in the param store only", RuntimeWarning)
                store.set_state({"params": {name: value.detach().clone().requires_grad_(True)},
                                 "constraints": {name: constraint_from_name(names.get(name) or "real")}})
                continue
            target = store[name].unconstrained()
            if target.shape != value.shape:
                raise UsageError(f"parameter {name!r} has shape {tuple(target.shape)} here but "
                                 f"{tuple(value.shape)} in {where}; build the pair as it was, or start a new run")
            target.copy_(value)


def _register(model: Callable, guide: Callable, example: Dict[str, torch.Tensor]) -> None:
    """Run guide and model once on ``example`` so their ``pyro.param`` / ``pyro.module``
    statements register (the random streams are left as they were)."""
    from pyrovae.infer.importance import bind_batch

    batch = example
    with torch.random.fork_rng(devices=[]), poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
        poutine.replay(bind_batch(model, batch), trace=guide_trace)(**batch)
