"""What :func:`~pyrovae.training.fit.fit` sets up before its loop, in one object.

:class:`FitOptions` holds the options a caller rarely changes; :class:`Setup` does the
set-up in the order a reader expects: the device and the process group, the data (a
:class:`~pyrovae.data.sources.Source`: held on the device where it fits, else streamed), the pair moved there, the first-step checks (:mod:`pyrovae.training.checks`), the
parameters collected, the optimizer and the step built. Nothing here writes to disk.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np
import pyro
import torch

from pyrovae.data.datasets import DataSet
from pyrovae.data.files import UserData
from pyrovae.data.inputs import as_batch_dict, is_tensor_data, resolve_dataset
from pyrovae.data.sources import Source, TensorSource, as_source
from pyrovae.errors import UsageError
from pyrovae.infer.importance import bind_batch, preserved_rng
from pyrovae.infer.objectives import make_objective, objective_record
from pyrovae.nn import INITS
from pyrovae.registry import spec_of
from pyrovae.training import distributed as dp
from pyrovae.training.checks import FirstStepError, check_pair
from pyrovae.training.cuda_graph import GraphedStep, graph_safe, static_from
from pyrovae.training.replay import ReplayedStep, replayable, replays_step, varying_weight
from pyrovae.training.step import (
    LossModule, TrainStep, autocast, check_compilable, check_compiled, collect_parameters, compiled_networks,
    make_optimizer, pair_networks, quiet_pyro_modules,
)


#: a FitOptions field that ``pyrovae fit`` does not make a flag (it has its own, or none)
NO_FLAG = {"flag": None}


@dataclass
class FitOptions:
    """The options of :func:`~pyrovae.fit` beyond the loop's own numbers; each may also be
    passed to ``fit`` by name (``fit(..., device="cpu", log_every=5)``). ``pyrovae fit`` makes
    each field a flag (``log_every`` is ``--log-every``) with the help below, except those
    marked ``NO_FLAG``.

    :param device: ``auto``, ``cpu`` or ``cuda``; the data and the pair's modules move there.
    :param bool progress: one progress bar for the run (default: when stderr is a terminal).
    :param int log_every: a line on stderr every this many epochs (0: none).
    :param str precision: ``fp32``, or ``bf16`` (the forward pass under bfloat16 autocast, for GPUs).
    :param valid_data: tensors for the per-epoch validation ELBO (default: the data set's own
        valid split).
    :param int valid_batch_size: datapoints per validation pass.
    :param int valid_every: the validation ELBO and monitors after every this many epochs and
        after the last (default 1: every epoch; 0: never). Short runs on a large validation
        split spend much of their time there.
    :param bool keep_best: the run's result is the pair as it was at its best validation ELBO
        (default): fit returns those weights, the end-of-fit figures and score use them, and
        ``load_run`` (``pyrovae evaluate``, ``sample``, ``diagnose``) loads them; the checkpoint
        keeps the last weights too, for ``resume`` (and ``load_run(..., weights="last")``).
        Without validation (``valid_every=0``, no valid split) the last weights are the result.
        A sequence model on a few hundred chorales overfits long before 3000 steps
        (docs/runs.md#the-best-validation-weights).
    :param int patience: stop once this many validations in a row have not improved on the best
        validation ELBO (0: never; ``pyrovae fit`` without ``--epochs`` uses a tenth of its
        default epochs, at least 10). run.json records where and why the run stopped.
    :param float checkpoint_seconds: with an out_dir, the checkpoint (with run.json and the
        metrics) is written after the first epoch, after the last, and after every epoch that ends
        at least this many seconds after the previous checkpoint (default 10; 0: after every
        epoch). Epochs of a few steps (a small folder of images) would otherwise spend their time
        writing checkpoints. Within an epoch, at a loss check (every 50 steps), a checkpoint is
        written once a minute (or this many seconds, the larger) has passed since the last one
        (one-process runs), so a long epoch interrupted loses at most about a minute. A resume
        continues exactly from whichever position was saved.
    :param data_dir: where a named data set's files are.
    :param distributed: data-parallel over a ``torchrun`` launch (None: when launched so).
    :param cuda_graphs: capture the step in a CUDA graph (None: on a GPU where it applies).
    :param dict config: extra entries for run.json (the CLI records ``data_dir``, imports...).
    :param bool figures: with an out_dir, write training_curves.png (and samples.png,
        reconstructions.png for image data) at the end, as ``pyrovae fit`` does.
    :param bool resume: continue the run in the out_dir (``--out``) from its last checkpoint; what
        would change the parameters' shapes or the data (its files, for data read from a path) is refused.
    :param str init: how a new run's weights start: ``torch`` (torch's defaults), ``glorot``,
        ``burda`` (Glorot weights and the decoder's output at the data's mean, for models with
        ``init_from_data``) or ``data`` (torch's layers and the output at the data's mean), see :func:`pyrovae.nn.initialize_`; default: the model's,
        :func:`pyrovae.nn.default_init` (``burda`` where the model's likelihood over the pixels
        allows it, unless the model declares a start measured better, e.g. ``torch`` for
        ``vae`` with a Gaussian likelihood; else ``torch``). run.json records the init used; a resumed run keeps the
        weights it saved (and run.json the init it started with).
    :param int num_workers: loader processes that read a streamed Dataset (a DataLoader keeps
        its own; 0: read in this process).
    :param max_bytes: hold a Dataset on the device when its estimated size is at most this
        (None: a quarter of the free device memory or RAM; 0: always stream), see
        :func:`~pyrovae.data.sources.as_source`.
    :param bool compile: the CPU step with the pair's networks compiled by ``torch.compile``
        (:func:`~pyrovae.training.step.pair_networks`; Pyro's statements stay eager), checked
        against the eager loss on the first batch; refused in one line where it does not apply.
        Opt-in: on a small network it is slower than eager, see docs/performance.md.
    :param bool replay: on a CPU, record the step's forward pass once (after three eager steps)
        as a graph of tensor operations and replay it for every later full batch, instead of
        running the Pyro program each step (:mod:`pyrovae.training.replay`; the same draws, loss
        and gradients). Where the step cannot be replayed (it reads tensors on the host, a KL
        warm-up step, another objective than the suite's, ``compile``, ``bf16``, several
        processes) it runs eagerly; ``--no-replay`` runs every step eagerly.
    """

    device: Any = field(default="auto", metadata=NO_FLAG)  # a common flag of every command
    progress: Optional[bool] = None
    log_every: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    valid_data: Any = field(default=None, metadata=NO_FLAG)
    valid_batch_size: int = field(default=500, metadata=NO_FLAG)
    valid_every: int = 1
    keep_best: bool = True
    patience: int = 0
    checkpoint_seconds: float = 10.0
    data_dir: Any = field(default=None, metadata=NO_FLAG)  # --data-dir reads the data before fit
    distributed: Optional[bool] = field(default=None, metadata=NO_FLAG)
    cuda_graphs: Optional[bool] = field(default=None, metadata=NO_FLAG)
    config: Optional[dict] = field(default=None, metadata=NO_FLAG)
    figures: bool = field(default=True, metadata=NO_FLAG)
    resume: bool = False
    init: Optional[str] = field(default=None, metadata={"choices": INITS})
    num_workers: int = 0
    max_bytes: Optional[int] = field(default=None, metadata=NO_FLAG)
    compile: bool = False
    replay: bool = True

    @classmethod
    def merge(cls, options: Optional["FitOptions"], more: dict) -> "FitOptions":
        """``options`` with the named fields of ``more`` replaced.

        :raises TypeError: a name that is no field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(more) - names)
        if unknown:
            raise TypeError(f"fit() got unexpected keyword argument(s) {', '.join(unknown)}; "
                            f"its options are {', '.join(sorted(names))}")
        return dataclasses.replace(options or cls(), **more)


class DeviceUnavailableError(UsageError, RuntimeError):
    """A device was asked for that this machine does not have."""


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA where present, else CPU; a clear error for CUDA without a GPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("device='cuda' was asked for but CUDA is not available; use device='cpu' or 'auto'")
    return device


def check_numbers(epochs, batch_size, lr, valid_batch_size, log_every, valid_every=1, patience=0) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("valid_batch_size", valid_batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("log_every", log_every), ("valid_every", valid_every), ("patience", patience)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise UsageError(f"lr must be a positive number, got {lr!r}")


def _modules(*objs):
    return [o for o in objs if isinstance(o, torch.nn.Module)]


class Setup:
    """Everything the loop needs, built and checked (nothing written).

    :ivar device: the device of the data and the pair.
    :ivar group: this process's :class:`~pyrovae.training.distributed.ProcessGroup`, or None.
    :ivar dataset: the :class:`~pyrovae.data.DataSet` or :class:`~pyrovae.data.UserData`, or
        None for tensors, Datasets and DataLoaders.
    :ivar source: the training :class:`~pyrovae.data.sources.Source` (``source.mode``:
        ``on-device`` or ``streamed``).
    :ivar dict train: the training tensors on the device where they are held there, else None.
    :ivar valid: the validation tensors (a dict), a streamed Source, or None.
    :ivar transform: the per-batch transform (dynamic binarization), or None.
    :ivar objective: the :class:`~pyrovae.infer.objectives.Objective`.
    :ivar dict store_params: the ``pyro.param`` tensors the pair trains beyond its modules.
    :ivar optimizer: Adam over every trainable tensor.
    :ivar step: ``step(batch, i) -> loss``: forward, backward, Adam (maybe a CUDA graph).
    :ivar dict example: the first row of the first batch (kept in checkpoints for reloading).
    """

    def __init__(self, model, guide, data, objective, batch_size: int, lr: float, seed: int, opts: FitOptions):
        self.model, self.guide, self.opts = model, guide, opts
        self._place(batch_size, seed)  # the device and the process group
        self.objective = make_objective(objective)
        self._read_data(data, batch_size)  # held on the device where it fits, else streamed
        first = self._check_pair(batch_size)  # the pair on the device, checked on the first batch
        self._build_step(first, lr)  # the parameters, the optimizer, the step

    def _place(self, batch_size: int, seed: int) -> None:
        """The device; under ``torchrun`` the process group, with each rank its own random stream."""
        opts = self.opts
        self.device = resolve_device(opts.device)
        autocast(self.device, opts.precision)  # an unknown precision fails here
        self.group = dp.init(self.device) if dp.wanted(opts.distributed) else None
        if self.group is not None:
            self.device = self.group.device
            if batch_size < self.group.world_size:
                raise UsageError(f"batch_size={batch_size} is the global batch; it needs at least one row for "
                                 f"each of the {self.group.world_size} processes")
            pyro.set_rng_seed(seed + self.group.rank)  # each rank its own random stream

    def _read_data(self, data, batch_size: int) -> None:
        """The training :class:`~pyrovae.data.sources.Source`, the validation data, the batch
        transform and the number of batches an epoch takes."""
        opts = self.opts
        self.dataset = resolve_dataset(data, opts.data_dir)
        if self.dataset is not None:
            ds = self.dataset
            train, valid = ds.train, ds.valid
            self.transform = ds.transform if isinstance(ds, (DataSet, UserData)) else None
        else:
            train, valid, self.transform = data, None, None
        if opts.valid_data is not None:
            valid = opts.valid_data
        self.source = self._source(train, "data")
        self.from_tensors = is_tensor_data(train)  # today's path: tensors held on the device as given
        valid_source = self._source(valid, "valid_data") if valid is not None else None
        self.train = self.source.split if isinstance(self.source, TensorSource) else None
        self.valid = valid_source.split if isinstance(valid_source, TensorSource) else valid_source
        self.num_rows = self.source.num_rows
        num_batches = self.source.num_batches(batch_size)
        # a data-parallel run leaves out a last batch too small to give every process a row
        self.num_batches = None if num_batches is None else num_batches - (
            self.group is not None and self.num_rows is not None
            and 0 < self.num_rows % batch_size < self.group.world_size)

    def _check_pair(self, batch_size: int) -> dict:
        """Move the pair to the device and check it on the first batch (returned)."""
        model, guide = self.model, self.guide
        for module in _modules(model, guide):
            module.to(self.device)
        first = self.source.first_batch(batch_size)
        if self.transform is not None:
            first = self.transform(first)
        self.call_model, self.call_guide = bind_batch(model, first), bind_batch(guide, first)
        self.dims = {"x_dim": int(first["x"].shape[-1])} if "x" in first else {}
        if self.source.num_classes is not None and not isinstance(self.source, TensorSource):
            self.dims["num_classes"] = self.source.num_classes
        check_pair(self.call_model, self.call_guide, first)
        self.example = {k: v[:1].detach().cpu().clone() for k, v in first.items()}  # a clone: a view keeps the data
        return first

    def _build_step(self, first: dict, lr: float) -> None:
        """Collect the parameters the first step touches, then the optimizer and the step (a
        CUDA graph on a GPU where it applies)."""
        model, guide, opts = self.model, self.guide, self.opts
        try:
            with pyro.validation_enabled(True):
                params, self.store_params = collect_parameters(
                    lambda: self.objective(self.call_model, self.call_guide, first, 0), _modules(model, guide))
        except Exception as error:
            raise FirstStepError("the first training step failed before anything was written: "
                                 + " ".join(str(error).split())) from error
        if not params:
            raise UsageError("the model and guide have no trainable parameters (no nn.Module, pyro.module or "
                             "pyro.param)")
        loss = LossModule(model, guide, self.objective, self.store_params,
                          call_model=self.call_model, call_guide=self.call_guide)
        cuda_graphs = opts.cuda_graphs
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda" and self.group is None and graph_safe(self.objective)
        self.optimizer = make_optimizer(params, lr, self.device, capturable=bool(cuda_graphs))
        quiet = quiet_pyro_modules(model, guide) if getattr(self.objective, "quiet_modules", False) else None
        compiled = self._compiled(model, guide, loss, quiet, first) if opts.compile else None
        self.train_step = TrainStep(dp.wrap(loss, self.group) if self.group else loss, self.optimizer,
                                    opts.precision, quiet, self.device, compiled=compiled)
        if self.device.type == "cuda":
            self.step = GraphedStep(self.train_step, enabled=bool(cuda_graphs), static_from=static_from(self.objective))
        else:  # the recorded forward pass replayed per batch where it applies
            self.step = ReplayedStep(self.train_step, enabled=opts.replay and replays_step(model, guide) and replayable(
                self.device, self.group is not None, opts.compile, opts.precision, self.objective),
                static_from=static_from(self.objective), weight=varying_weight(self.objective))

    def _compiled(self, model, guide, loss, quiet, first) -> compiled_networks:
        """The pair's networks compiled (``compile=True``), checked on the first batch."""
        check_compilable(self.device, self.group is not None)
        with preserved_rng(), pyro.validation_enabled(False):  # with gradients: TraceEnum_ELBO refuses a loss
            networks = pair_networks(model, guide, lambda: loss(first, 0))  # without (M2 and the enumerated pairs)
        if not networks:
            raise UsageError("compile=True (--compile): the pair has no networks to compile (no nn.Module with "
                             "parameters in the model or guide, nor one named by pyro.module); drop --compile")
        compiled = compiled_networks(networks)
        with pyro.validation_enabled(False):
            check_compiled(loss, quiet, compiled, first)
        return compiled

    def _source(self, data, what: str) -> Source:
        if is_tensor_data(data) or isinstance(data, (list, tuple, np.ndarray)):  # a list: the TypeError of old
            name = self.dataset.name if isinstance(self.dataset, DataSet) else None
            reason = f"data set {name!r}, held on {self.device}" if name else f"given as tensors, held on {self.device}"
            return TensorSource(as_batch_dict(data, what), self.device, reason=reason)
        return as_source(data, self.device, num_workers=self.opts.num_workers, max_bytes=self.opts.max_bytes)

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main

    def run_config(self, epochs: int, batch_size: int, lr: float, seed: int) -> dict:
        """run.json's description of this run (without its segments)."""
        ds, objective = self.dataset, self.objective
        if isinstance(ds, DataSet):
            data = {"name": ds.name, "binarize": ds.binarize, "dims": ds.dims()}
        elif isinstance(ds, UserData):  # read from a path: what was read, to check on evaluate and resume
            data = {"name": ds.path, "binarize": ds.binarize, "dims": ds.dims(), "image_shape": list(ds.image_shape),
                    "files": ds.describe()}
        else:
            data = {"name": None, "binarize": None, "dims": self.dims}
        data["mode"] = self.source.describe()
        return {
            "model": spec_of(self.model),
            "guide": spec_of(self.guide),
            "objective": objective_record(objective),
            "data": data,
            "fit": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(self.device),
                    "precision": self.opts.precision, "processes": self.group.world_size if self.group else 1,
                    "keep_best": self.opts.keep_best, "patience": self.opts.patience},
            **(self.opts.config or {}),
        }

    def close(self) -> None:
        """A data-parallel run's teardown: the DDP module and optimizer first, then the group."""
        if self.group is not None:
            del self.train_step, self.step, self.optimizer
            self.group.close()
