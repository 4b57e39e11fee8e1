"""fit(): the SVI loop, with checkpoints, resume and metrics.

The loop is plain and reads top to bottom: for each epoch, for each batch, the objective
gives a differentiable loss (the negative bound per datapoint), ``backward``, an optimizer
step. The parameters are whatever the pair uses: its nn.Module parameters and any
``pyro.param`` / ``pyro.module`` values seen in one trace, so plain-function pairs train as
well as the suite's PyroModules. Pyro's validation checks the first step and is then off.

The step itself (pyrovae/training/step.py) is the objective's loss as a torch module, with torch's
fused Adam; during the step the pair's PyroModules issue no per-parameter ``pyro.param``
statements, and the suite's ELBOs run on one recorded run instead of Pyro's full traces (the
same loss and gradients). On a GPU the whole step is captured in a CUDA graph and replayed
(pyrovae/training/cuda_graph.py); under ``torchrun`` the loop is data-parallel (pyrovae/training/distributed.py).
See docs/performance.md.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pyro
import torch

from pyrovae.training import distributed as dp
from pyrovae.training.cuda_graph import GraphedStep, graph_safe, static_from
from pyrovae.data.datasets import DataSet, batches
from pyrovae.training.step import (
    LossModule, TrainStep, autocast, collect_parameters, make_optimizer, quiet_pyro_modules,
)
from pyrovae.evaluation.log_likelihood import elbo as mean_elbo
from pyrovae.data.inputs import as_batch_dict, resolve_dataset, to_device
from pyrovae.evaluation.monitors import epoch_monitors
from pyrovae.infer.objectives import Objective, make_objective
from tqdm.auto import tqdm
from pyrovae.registry import spec_of
from pyrovae.training.run_folder import (
    CHECKPOINT_FILE, METRICS_FILE, RUN_FILE, load_checkpoint, save_checkpoint, write_json, write_metrics,
)
from pyrovae.infer.importance import bind_batch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    :ivar model: the trained model (same object as passed).
    :ivar guide: the trained guide.
    :ivar list metrics: one dict per epoch (epoch, step, train_loss, valid_elbo, seconds, ...).
    :ivar out_dir: the run folder, or None.
    """

    model: Any
    guide: Any
    metrics: List[dict] = field(default_factory=list)
    out_dir: Optional[Path] = None
    dataset: Optional[DataSet] = None


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA where present, else CPU; a clear error for CUDA without a GPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but CUDA is not available; use device='cpu' or 'auto'")
    return device


def _modules(*objs):
    return [o for o in objs if isinstance(o, torch.nn.Module)]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])]
    import random

    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    return state


def _set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def parameter_state(model, guide, store_params: Dict[str, torch.Tensor]) -> dict:
    return {
        "model": model.state_dict() if isinstance(model, torch.nn.Module) else {},
        "guide": guide.state_dict() if isinstance(guide, torch.nn.Module) else {},
        "param_store": {name: p.detach().clone() for name, p in store_params.items()},
    }


def load_parameters(checkpoint: dict, model, guide) -> None:
    """Copy a checkpoint's parameters into the pair, in place (optimizer references stay valid)."""
    for obj, key in ((model, "model"), (guide, "guide")):
        if isinstance(obj, torch.nn.Module):
            obj.load_state_dict(checkpoint[key])
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, value in checkpoint.get("param_store", {}).items():
            if name in store:
                store[name].unconstrained().copy_(value)
            else:
                store._params[name] = value.clone().requires_grad_(True)
                store._param_to_name[store._params[name]] = name


def _prepare_data(data, valid_data, data_dir, device):
    dataset = resolve_dataset(data, data_dir)
    if dataset is not None:
        train, valid = dataset.train, dataset.valid
        transform = dataset.transform
    else:
        train, valid, transform = as_batch_dict(data, "data"), None, None
    if valid_data is not None:
        valid = as_batch_dict(valid_data, "valid_data")
    train = to_device(as_batch_dict(train, "data"), device)
    valid = to_device(valid, device) if valid is not None else None
    return dataset, train, valid, transform


def _check_positive_int(**values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def fit(
    model: Callable,
    guide: Callable,
    data,
    *,
    objective="elbo",
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    device="auto",
    seed: int = 0,
    out_dir=None,
    resume: bool = False,
    valid_data=None,
    valid_batch_size: int = 500,
    data_dir=None,
    progress: Optional[bool] = None,
    config: Optional[dict] = None,
    precision: str = "fp32",
    distributed: Optional[bool] = None,
    cuda_graphs: Optional[bool] = None,
) -> FitResult:
    """Fit any Pyro model/guide pair by stochastic variational inference.

    :param model: a Pyro model: a PyroModule, an nn.Module, or a plain function using
        ``pyro.module`` / ``pyro.param``; it takes the batch's tensors as keyword arguments.
    :param guide: a guide with the same signature, sampling every latent site of the model.
    :param data: a tensor (rows are datapoints, passed as ``x``), a dict of named tensors, a
        :class:`~pyrovae.data.DataSet` or a data set name (``"digits"``, ``"mnist"``, ...).
    :param objective: a registered objective name (``elbo``, ``meanfield``, ``iwae``,
        ``renyi``) or an :class:`~pyrovae.objectives.Objective`.
    :param int epochs: total epochs (a resumed run continues up to this number).
    :param int batch_size: datapoints per step.
    :param float lr: Adam's learning rate.
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``; the data and the pair's modules move there.
    :param int seed: seeds Pyro, torch, numpy and the batch order.
    :param out_dir: a run folder to write (checkpoint each epoch, metrics, run.json); None keeps
        everything in memory.
    :param bool resume: continue the run in ``out_dir`` from its last checkpoint.
    :param valid_data: tensors for the per-epoch validation ELBO (a data set's own valid split
        is used by default).
    :param progress: show a progress bar (default: when stderr is a terminal).
    :param dict config: extra entries for run.json (the CLI records model and guide specs).
    :param str precision: ``fp32``, or ``bf16`` for the forward pass under bfloat16 autocast
        (meant for GPUs; runs on CPUs too).
    :param distributed: data-parallel over the processes of a ``torchrun`` launch (None:
        when launched so). ``batch_size`` is then the global batch; see
        :mod:`pyrovae.training.distributed`.
    :param cuda_graphs: capture the training step in a CUDA graph and replay it (None: on a
        GPU, outside data-parallel runs, for the suite's objectives); it falls back to eager
        steps wherever capture does not apply.
    :returns: :class:`FitResult`.

    >>> import torch
    >>> from pyrovae import fit
    >>> from pyrovae.models import VAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> x = torch.bernoulli(torch.full((64, 6), 0.3))
    >>> result = fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), x, epochs=2, batch_size=32, progress=False)
    >>> len(result.metrics)
    2
    """
    # ---- check everything before touching the disk -------------------------------------
    _check_positive_int(epochs=epochs, batch_size=batch_size, valid_batch_size=valid_batch_size)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    device = resolve_device(device)
    objective = make_objective(objective)
    autocast(device, precision)  # an unknown precision fails here
    out_dir = Path(out_dir) if out_dir is not None else None
    group = dp.init(device) if dp.wanted(distributed) else None  # this process's rank, or None
    if group is not None:
        device = group.device
        if batch_size < group.world_size:
            raise ValueError(f"batch_size={batch_size} is the global batch; it needs at least one row for each "
                             f"of the {group.world_size} processes")
    (group.on_main if group else _call)(lambda: _check_out_dir(out_dir, resume))
    dataset, train, valid, transform = _prepare_data(data, valid_data, data_dir, device)
    for module in _modules(model, guide):
        module.to(device)
    pyro.set_rng_seed(seed + (group.rank if group else 0))  # each rank its own random stream

    bound_model, bound_guide = bind_batch(model, train), bind_batch(guide, train)
    first = next(batches(train, batch_size, transform=transform))
    try:
        with pyro.validation_enabled(True):
            params, store_params = collect_parameters(
                lambda: objective(bound_model, bound_guide, first, 0), _modules(model, guide)
            )
    except Exception as error:  # re-raise with what failed, nothing written yet
        raise type(error)(f"the first training step failed before anything was written: {error}") from error
    if not params:
        raise ValueError("the model and guide have no trainable parameters (no nn.Module, pyro.module or pyro.param)")
    # the loss as a torch module whose parameters are everything the pair trains
    loss_module = LossModule(model, guide, objective, store_params, call_model=bound_model, call_guide=bound_guide)
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda" and group is None and graph_safe(objective)
    optimizer = make_optimizer(params, lr, device, capturable=bool(cuda_graphs))
    train_step = TrainStep(dp.wrap(loss_module, group) if group else loss_module, optimizer, precision,
                           quiet_pyro_modules(model, guide) if getattr(objective, "quiet_modules", False) else None, device)
    run_step = GraphedStep(train_step, enabled=bool(cuda_graphs) and device.type == "cuda",
                           static_from=static_from(objective))

    run_config = {
        "model": spec_of(model),
        "guide": spec_of(guide),
        "objective": objective.config() if isinstance(objective, Objective) else None,
        "data": {"name": dataset.name if dataset else None, "binarize": dataset.binarize if dataset else None,
                 "dims": dataset.dims() if dataset else {"x_dim": int(train[next(iter(train))].shape[-1])}},
        "fit": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(device),
                "precision": precision, "processes": group.world_size if group else 1},
        **(config or {}),
    }
    start_epoch, step, metrics = 0, 0, []
    if resume:
        if group is None:
            checkpoint = load_checkpoint(out_dir / CHECKPOINT_FILE, map_location=device)
        else:  # rank 0 reads it (no shared file system needed) and sends it to the others
            checkpoint = group.on_main(lambda: load_checkpoint(out_dir / CHECKPOINT_FILE, map_location="cpu"))
        load_parameters(checkpoint, model, guide)
        optimizer.load_state_dict(checkpoint["optimizer"])
        _set_rng_state(_rank_rng(checkpoint, group, seed))
        start_epoch, step, metrics = checkpoint["epoch"], checkpoint["step"], list(checkpoint["metrics"])

    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and (group is None or group.is_main)
    num_rows = len(train[next(iter(train))])
    # a data-parallel run leaves out a last batch too small to give every process a row
    num_batches = math.ceil(num_rows / batch_size) - (group is not None and 0 < num_rows % batch_size < group.world_size)
    sync_every = 50  # losses are checked (and, on a GPU, copied to the host) every 50 steps
    last_good = start_epoch

    with pyro.validation_enabled(False):
        for epoch in range(start_epoch, epochs):
            model_modules = _modules(model, guide)
            for m in model_modules:
                m.train(True)
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            bar = tqdm(disable=not progress, dynamic_ncols=True, total=num_batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
            t0 = time.perf_counter()
            pending, total, count = [], 0.0, 0
            for i, batch in enumerate(batches(train, batch_size, shuffle=True, generator=generator)):
                if i == num_batches:
                    break
                if group is not None:  # this rank's rows; its loss weighted by its share
                    batch, train_step.loss_scale = group.shard(batch)
                if transform is not None:
                    batch = transform(batch)
                # loss = objective(model, guide, batch, step); zero_grad; backward; Adam step
                loss = run_step(batch, step)
                step += 1
                pending.append(loss)
                if len(pending) >= sync_every or i == num_batches - 1:
                    values = torch.stack(pending)
                    values = (group.mean(values) if group is not None else values).cpu()
                    _check_finite(values, epoch, step, i, num_batches, out_dir, last_good)
                    total += float(values.sum())
                    count += len(values)
                    pending = []
                    bar.update(len(values))
                    bar.set_postfix(loss=f"{total / count:.3f}")
            seconds = time.perf_counter() - t0
            bar.close()
            row = {"epoch": epoch + 1, "step": step, "train_loss": total / count,
                   "kl_weight": objective.kl_weight(step) if isinstance(objective, Objective) else 1.0,
                   "seconds": seconds}
            if valid is not None:
                t1 = time.perf_counter()
                row["valid_elbo"] = mean_elbo(model, guide, valid, batch_size=valid_batch_size, split="valid")
                row.update(epoch_monitors(model, guide, valid))  # active units, KL/dim, rate, distortion, MI
                row["valid_seconds"] = time.perf_counter() - t1
            metrics.append(row)
            if progress:
                print(_describe(row), file=sys.stderr)
            if out_dir is not None:
                rng = _rng_state()
                state = {
                    **parameter_state(model, guide, store_params),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "epoch": epoch + 1,
                    "step": step,
                    "metrics": metrics,
                }
                if group is not None:  # every rank's stream, for an exact resume
                    state["rng_ranks"] = group.gather(rng)
                if group is None or group.is_main:
                    if epoch == start_epoch and not resume:
                        write_json(out_dir / RUN_FILE, run_config)
                    save_checkpoint(out_dir / CHECKPOINT_FILE, state)
                    write_metrics(out_dir / METRICS_FILE, metrics)
                if group is not None:
                    group.barrier()
            last_good = epoch + 1
    if group is not None:  # clean teardown: the DDP module and optimizer first, then the group
        del train_step, run_step, optimizer, loss_module
        group.close()
    return FitResult(model=model, guide=guide, metrics=metrics, out_dir=out_dir, dataset=dataset)


def _call(fn):
    return fn()


def _check_finite(values: torch.Tensor, epoch: int, step: int, batch: int, num_batches: int,
                  out_dir: Optional[Path], last_good: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite loss among ``values``, the
    losses of the steps that end at optimizer step ``step`` (batch ``batch`` of the epoch)."""
    bad = (~torch.isfinite(values)).nonzero()
    if not len(bad):
        return
    j = int(bad[0])
    at_step = step - len(values) + j + 1
    at_batch = batch + 2 - len(values) + j
    if out_dir is None:
        where = "none (no out_dir)"
    elif last_good:
        where = f"{out_dir / CHECKPOINT_FILE} (after epoch {last_good})"
    else:
        where = "none (no epoch finished)"
    raise NonFiniteLossError(
        f"the loss became {float(values[j])} at epoch {epoch + 1}, step {at_step} (batch {at_batch} of "
        f"{num_batches}); the run stopped. Last good checkpoint: {where}. Try a smaller lr or check the data."
    )


def _check_out_dir(out_dir: Optional[Path], resume: bool) -> None:
    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        if not (out_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"cannot resume: {out_dir} has no {CHECKPOINT_FILE}; start it without resume")
    elif out_dir is not None and (out_dir / CHECKPOINT_FILE).exists():
        raise FileExistsError(
            f"{out_dir} already holds a run; pass resume=True (--resume) to continue it, "
            "or choose another out_dir"
        )


def _rank_rng(checkpoint: dict, group, seed: int) -> dict:
    """The random state this process resumes from: its own rank's in a data-parallel run."""
    if group is None:
        return checkpoint["rng"]
    ranks = checkpoint.get("rng_ranks")
    if ranks is not None and len(ranks) == group.world_size:
        return ranks[group.rank]
    if group.is_main:
        return checkpoint["rng"]
    # another number of processes than when saved: a fresh stream for this rank
    pyro.set_rng_seed(seed + group.rank + 7919 * checkpoint["epoch"])
    return _rng_state()


def _describe(row: dict) -> str:
    text = f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}"
    if "valid_elbo" in row:
        text += f", valid ELBO {row['valid_elbo']:.3f}"
    return text + f" ({row['seconds']:.1f} s)"
