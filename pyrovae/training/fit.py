"""fit(): the SVI loop, with checkpoints, resume and metrics.

The loop reads top to bottom: seed, set up (:class:`~pyrovae.training.setup.Setup`: data,
device, the pair moved and checked on the first batch, parameters, optimizer, step), open
the run folder (:class:`~pyrovae.training.checkpoint.Checkpoints`: lock, resume), then for
each epoch, for each batch, one step (the objective's loss, ``backward``, Adam), and after
each epoch the validation ELBO (every ``valid_every`` epochs), a checkpoint and the metrics; the pair's weights at
the best validation ELBO are kept (``keep_best``) and are the run's result, and ``patience`` stops a run whose
validation ELBO no longer improves. The batches come from a
:class:`~pyrovae.data.sources.Source`: tensors held on the device, or a Dataset / DataLoader
streamed batch by batch; an epoch's order is a function of ``(seed, epoch)`` alone and the
checkpoint keeps the position within the epoch, so a resumed run reads the same batches. The parameters are whatever
the pair uses: its nn.Module parameters and any ``pyro.param`` / ``pyro.module`` values, so
plain-function pairs train as well as the suite's PyroModules.

On a GPU the step is captured in a CUDA graph and replayed (pyrovae/training/cuda_graph.py);
on a CPU its forward pass is recorded once as tensor operations and replayed per batch
(pyrovae/training/replay.py);
under ``torchrun`` the loop is data-parallel (pyrovae/training/distributed.py). See
docs/runs.md for the run folder and docs/performance.md for speed.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae.data.datasets import DataSet
from pyrovae.data.files import UserData, verify
from pyrovae.data.inputs import head
from pyrovae.data.sources import DataError
from pyrovae.errors import PyrovaeError, UsageError
from pyrovae.evaluation.log_likelihood import elbo as mean_elbo
from pyrovae.evaluation.monitors import epoch_monitors
from pyrovae.guides.base import objective_for, objective_options_for
from pyrovae.infer.importance import preserved_rng
from pyrovae.infer.objectives import Objective, make_objective
from pyrovae.nn import FROM_DATA, default_init, initialize_
from pyrovae.training.checkpoint import Checkpoints, rng_state, set_rng_state
from pyrovae.training.files import CHECKPOINT_FILE, METRICS_FILE, RUN_FILE, interrupts_deferred, write_json, write_metrics
from pyrovae.training.heartbeat import Heartbeat
from pyrovae.training.parameters import load_parameters, parameter_state  # noqa: F401  (re-exported)
from pyrovae.training.segments import check_resumable, segment, with_segments
from pyrovae.training.setup import FitOptions, Setup, check_numbers, resolve_device  # noqa: F401

INIT_ROWS = 10000  # training rows whose mean starts the decoder's output (init="burda")
SYNC_EVERY = 50  # losses are checked (and, on a GPU, copied to the host) every 50 steps
MID_EPOCH_SECONDS = 60.0  # within an epoch, a checkpoint at a loss check at most this often (or checkpoint_seconds,
# the larger): a long epoch interrupted loses at most about a minute, and saving costs under 1% of it
VALID_SEED_STRIDE = 1_000_033  # the validation ELBO draws from torch.manual_seed(seed * this) after every epoch


class NonFiniteLossError(PyrovaeError, RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class RunExistsError(UsageError, FileExistsError):
    """The out_dir already holds a run and resume was not asked for."""


class NoRunError(UsageError, FileNotFoundError):
    """resume was asked for but the out_dir holds no checkpoint."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    :ivar model: the trained model (same object as passed).
    :ivar guide: the trained guide.
    :ivar list metrics: one dict per epoch (epoch, step, train_loss, valid_elbo, seconds, ...).
    :ivar out_dir: the run folder, or None.
    :ivar dataset: the :class:`~pyrovae.data.DataSet` or :class:`~pyrovae.data.UserData`
        trained on, or None for tensors, Datasets and DataLoaders.
    :ivar str data_mode: how the training data was read (``source.describe()``: on-device or
        streamed, and why).
    :ivar list figures: the figures written into out_dir.
    :ivar dict best: the best validation ELBO and its epoch (``{"epoch", "valid_elbo"}``), or
        None without validation.
    :ivar int weights_epoch: the epoch whose weights model and guide hold: the best
        validation ELBO's with ``keep_best`` (the default), else the last.
    :ivar bool stopped_early: the run stopped before its epochs (``patience``).
    """

    model: Any
    guide: Any
    metrics: List[dict] = field(default_factory=list)
    out_dir: Optional[Path] = None
    dataset: Optional[Any] = None
    figures: List[Path] = field(default_factory=list)
    data_mode: str = ""
    best: Optional[dict] = None
    weights_epoch: int = 0
    stopped_early: bool = False


#: Adam's learning rate for a model that declares none (``Model.default_lr``)
DEFAULT_LR = 1e-3


def default_lr(model) -> float:
    """The learning rate a new run of ``model`` gets when none is asked for (``fit(lr=None)``,
    ``pyrovae fit`` without ``--lr``): the model's ``default_lr`` where it declares one, else
    :data:`DEFAULT_LR`. Measured: docs/draw.md (DRAW's 3e-3).

    >>> class Declares(torch.nn.Module):
    ...     default_lr = 3e-3
    >>> default_lr(Declares()), default_lr(torch.nn.Linear(2, 2)), default_lr(lambda x: None)
    (0.003, 0.001, 0.001)
    """
    declared = getattr(model, "default_lr", None)
    return float(declared) if isinstance(declared, (int, float)) and not isinstance(declared, bool) else DEFAULT_LR


def fit(model: Callable, guide: Callable, data, *, objective=None, epochs: int = 10, batch_size: int = 100,
        lr: Optional[float] = None, seed: int = 0, out_dir=None, options: Optional[FitOptions] = None,
        **more) -> FitResult:
    """Fit any Pyro model/guide pair by stochastic variational inference.

    :param model: a Pyro model: a PyroModule, an nn.Module, or a plain function using
        ``pyro.module`` / ``pyro.param``; it takes the batch's tensors as keyword arguments.
    :param guide: a guide with the same signature, sampling every latent site of the model.
    :param data: a tensor (rows are datapoints, passed as ``x``), a dict of named tensors, a
        :class:`~pyrovae.data.DataSet`, a data set name (``"digits"``, ``"mnist"``, ...), a
        map-style or iterable torch ``Dataset`` or a ``DataLoader`` (items: tensors or dicts of
        named tensors), a :class:`~pyrovae.data.UserData` from
        :func:`~pyrovae.data.load_data_path`, or a path / ``module:function`` it reads (a
        registered name wins). A Dataset is held on the device when it fits (``max_bytes``),
        else streamed; ``FitResult.data_mode`` and run.json say which.
    :param objective: a registered objective name (``elbo``, ``meanfield``, ``iwae``,
        ``renyi``, ``enum``, ...) or an :class:`~pyrovae.infer.objectives.Objective`; None
        (default): the guide's own (its ``objective_name``, e.g. ``enum`` for the M2 guide,
        ``stein`` for the Stein guide), else the model's ``default_objective`` (``meanfield``
        for ``least-squares-vae``), else ``elbo``, as ``pyrovae fit`` chooses
        (:func:`~pyrovae.guides.base.objective_for`). A name is built with the model's
        ``default_objective_options`` it declares (the KL warm-up of ``vrnn``, ``dmm`` and ``hvae``,
        :func:`~pyrovae.guides.base.objective_options_for`); pass an Objective to choose every option.
    :param int epochs: total epochs (a resumed run continues up to this number).
    :param int batch_size: datapoints per step.
    :param float lr: Adam's learning rate (None: the model's, :func:`default_lr`; 1e-3 for most).
    :param int seed: seeds Pyro, torch, numpy and the batch order (first thing fit does).
    :param out_dir: a run folder to write (checkpoint each epoch, metrics, run.json, figures);
        None keeps everything in memory.
    :param FitOptions options: the other options; each may also be given by name
        (``resume``, ``device``, ``progress``, ``log_every``, ``precision``, ``valid_data``,
        ``valid_batch_size``, ``valid_every``, ``data_dir``, ``distributed``, ``cuda_graphs``, ``replay``, ``config``,
        ``figures``, ``init``, ``num_workers``, ``max_bytes``), see
        :class:`~pyrovae.training.setup.FitOptions`. ``resume=True`` continues the run in
        ``out_dir`` from its last checkpoint; what would change the parameters' shapes or the
        data is refused.
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
    opts = FitOptions.merge(options, more)
    if opts.init is None:  # the model's: burda where its output can start at the data's mean, else torch
        opts = FitOptions.merge(opts, {"init": default_init(model)})
    if lr is None:
        lr = default_lr(model)
    check_numbers(epochs, batch_size, lr, opts.valid_batch_size, opts.log_every, opts.valid_every, opts.patience)
    if opts.resume and out_dir is None:
        raise UsageError("resume=True needs the out_dir of the run to continue")
    if opts.resume and not Checkpoints(Path(out_dir)).exists():  # refused before the folder or its lock is made
        raise NoRunError(f"cannot resume {out_dir}: it is not a run folder (no {CHECKPOINT_FILE}); pass the out_dir "
                         "(--out) of an earlier fit, or start a new run without resume (--resume)")
    pyro.set_rng_seed(seed)  # before anything random happens
    objective = objective_of(model, guide, objective)
    s = Setup(model, guide, data, objective, batch_size, lr, seed, opts)  # checks everything, writes nothing
    _check_warmup_fits(s, objective, epochs)
    if not opts.resume:  # a new run's weights (a resumed one loads its own)
        _initialize(s, opts.init)
    out_dir = Path(out_dir) if out_dir is not None else None
    run = _Run(s, Checkpoints(out_dir) if out_dir is not None and s.is_main else None, out_dir,
               s.run_config(epochs, batch_size, lr, seed), epochs, batch_size, seed)
    try:
        _start(run, lr)  # lock the run folder; on resume, check it and load the last checkpoint
        with _progress_bar(run) as bar, pyro.validation_enabled(False):
            for epoch in range(run.epoch, epochs):
                row = _train_epoch(run, epoch, bar)  # one pass over the batches: its mean loss
                _end_epoch(run, epoch, row)  # validation, the best weights, the metrics row, the checkpoint
                if run.stopped:  # patience: no better validation ELBO for that many validations
                    break
        weights_epoch = _keep_best(run)  # the pair as it was at its best validation ELBO
    except KeyboardInterrupt:
        if run.folder is not None:
            run.folder.tidy()  # the last complete checkpoint stays checkpoint.pt
        raise
    finally:
        if run.folder is not None:
            run.folder.lock.release()
    figures = _figures(s, model, guide, run.metrics, out_dir) if run.folder is not None and opts.figures else []
    s.close()
    return FitResult(model=model, guide=guide, metrics=run.metrics, out_dir=out_dir, dataset=s.dataset,
                     figures=figures, data_mode=run.config["data"]["mode"], best=_best_record(run),
                     weights_epoch=weights_epoch, stopped_early=run.stopped)


@dataclass
class _Run:
    """What the loop reads and advances: the set-up, the run folder, and where the run is.

    :ivar int epoch: the next epoch to train.
    :ivar int saved_epoch: the epochs the last good checkpoint holds; ``saved_at`` when it was
        written (``time.perf_counter``; ``started_at`` when this segment began); ``ends_saved``
        the epoch ends this segment has saved.
    :ivar int step: optimizer steps taken.
    :ivar int batch: the batch the next epoch starts at (a resumed epoch's position; else 0).
    :ivar dict partial: a resumed epoch's loss sum, count and seconds before ``batch`` (so its
        metrics row is the uninterrupted one's); else empty.
    :ivar list metrics: one row per finished epoch.
    :ivar dict config: run.json's description of this segment; ``saved`` the run.json resumed,
        ``segment`` this segment's record.
    :ivar Heartbeat beat: the lines a slow fit prints where no progress bar is drawn.
    :ivar dict best: the best validation ELBO so far, ``{"epoch", "valid_elbo"}``, or None;
        ``best_state`` a copy of that epoch's parameters (``parameter_state(..., copy=True)``) where held, else None;
        ``stale`` the validations since it; ``stopped`` whether ``patience`` ran out.
    """

    s: Setup
    folder: Optional[Checkpoints]
    out_dir: Optional[Path]
    config: dict
    epochs: int
    batch_size: int
    seed: int
    epoch: int = 0
    saved_epoch: int = 0
    saved_at: float = 0.0
    started_at: float = field(default_factory=time.perf_counter)
    ends_saved: int = 0
    step: int = 0
    batch: int = 0
    partial: dict = field(default_factory=dict)
    metrics: List[dict] = field(default_factory=list)
    saved: Optional[dict] = None
    segment: dict = field(default_factory=dict)
    beat: Optional[Heartbeat] = None
    best: Optional[dict] = None
    best_state: Optional[dict] = None
    stale: int = 0
    stopped: bool = False


def _initialize(s: Setup, init: str) -> None:
    """A new run's weights by the scheme ``init`` (``burda`` and ``data`` read the first training rows)."""
    try:
        initialize_(s.model, s.guide, head(s.source, INIT_ROWS, s.device) if init in FROM_DATA else {}, init)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if s.group is not None and init != "torch":  # each rank drew its own Glorot weights: rank 0's for all
        s.group.copy_from_main([p for group in s.optimizer.param_groups for p in group["params"]])


def _start(run: _Run, lr: float) -> None:
    """Open the run folder (lock it; refuse a run that exists, or a resume with none) and, on
    resume, check run.json against this segment and load the last checkpoint: parameters,
    optimizer (at this segment's ``lr``), random state and position. Then record the segment."""
    s, opts, out_dir = run.s, run.s.opts, run.out_dir
    run.config["init"] = opts.init
    if out_dir is not None:
        _on_main(s, lambda: _open(run.folder, opts.resume))
    if opts.resume:
        run.saved = _on_main(s, lambda: _read_json(out_dir / RUN_FILE))
        if run.saved is not None:
            check_resumable(run.saved, run.config, out_dir)
            run.config["init"] = run.saved.get("init", "torch")  # how the run started, not this segment's option
            files = (run.saved.get("data") or {}).get("files")
            if files is not None and isinstance(s.dataset, UserData):
                verify(files)  # DataChangedError if the files are not those the run read
        checkpoint = _on_main(s, lambda: run.folder.load(map_location=s.device if s.group is None else "cpu"))
        load_parameters(checkpoint, s.model, s.guide, where=str(out_dir))
        try:
            s.optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as error:
            raise UsageError(f"cannot resume {out_dir}: the optimizer state does not fit this pair's "
                             f"parameters ({error}); start a new run") from None
        for group in s.optimizer.param_groups:  # the state carries the saved lr; this segment's lr wins
            group["lr"] = lr
        set_rng_state(_rank_rng(checkpoint, s.group, run.seed))
        run.epoch, run.step, run.metrics = checkpoint["epoch"], checkpoint["step"], list(checkpoint["metrics"])
        if run.epoch > run.epochs:  # else nothing trains and run.json records the smaller number as the run's
            raise UsageError(f"cannot resume {out_dir} to epochs={run.epochs}: it has finished {run.epoch} epochs "
                             "already; pass a larger epochs (--epochs) to train it further")
        run.saved_epoch = run.epoch
        position = checkpoint.get("position") or {}
        run.batch = position.get("batch", 0) if position.get("epoch", run.epoch) == run.epoch else 0
        run.partial = dict(position.get("partial") or {}) if run.batch else {}
        _resume_best(run, checkpoint, out_dir)
    run.segment = segment(run.config, run.epoch, run.epochs, (opts.config or {}).get("threads"))
    if run.folder is not None:
        write_json(out_dir / RUN_FILE, with_segments(run.config, run.saved, run.segment))


def objective_of(model, guide, objective=None):
    """The objective fit trains ``model`` and ``guide`` with: a name (None: the pair's,
    :func:`~pyrovae.guides.base.objective_for`) built with the options the model declares
    (its KL warm-up, :func:`~pyrovae.guides.base.objective_options_for`); anything else as it is."""
    if objective is None or isinstance(objective, str):
        name = objective or objective_for(model, guide)
        return make_objective(name, **objective_options_for(model, name))
    return objective


def _check_warmup_fits(s, objective, epochs: int) -> None:
    """A one-line warning where the objective's KL warm-up outlasts the run: its last steps still
    train a down-weighted KL, short of the bound (the model's default warm-up, vrnn's 1000 steps,
    and a short ``--epochs``). Where the batches per epoch are unknown (an iterable source), no check."""
    warmup = getattr(objective, "warmup_steps", 0)
    total = None if s.num_batches is None else epochs * s.num_batches
    if not warmup or total is None or warmup <= total or not s.is_main:
        return
    warnings.warn(f"the KL warm-up ({warmup} steps) is longer than this run ({total} steps): the KL weight ends "
                  f"at {objective.kl_weight(total - 1):.2g}, short of the bound; pass a shorter warm-up "
                  f"(--kl-warmup N, warmup_steps=N; e.g. {total // 2}) or more epochs", RuntimeWarning, stacklevel=3)


def _progress_bar(run: _Run):
    """The run's one progress bar over steps (shown where ``progress`` is on, on rank 0)."""
    s, opts = run.s, run.s.opts
    progress = (sys.stderr.isatty() if opts.progress is None else opts.progress) and s.is_main
    if opts.log_every and s.is_main and not s.from_tensors:  # how a Dataset or DataLoader is read
        tqdm.write(run.config["data"]["mode"], file=sys.stderr)
    # no bar (stderr not a terminal, progress not refused): a line after the first steps and every minute
    run.beat = Heartbeat(run.epochs, s.num_batches, enabled=opts.progress is None and not progress and s.is_main)
    return tqdm(total=run.epochs * s.num_batches if s.num_batches is not None else None,
                initial=run.epoch * s.num_batches + run.batch if s.num_batches is not None else 0,
                desc="fit", unit="step", disable=not progress, dynamic_ncols=True)


def _train_epoch(run: _Run, epoch: int, bar) -> dict:
    """One pass over the training batches, from ``run.batch``: a step each (the objective's
    loss, ``backward``, Adam), the losses checked every :data:`SYNC_EVERY` steps. Returns the
    epoch's metrics row so far (epoch, step, train_loss, kl_weight, seconds)."""
    s = run.s
    for m in (m for m in (s.model, s.guide) if isinstance(m, torch.nn.Module)):
        m.train(True)
    t0 = time.perf_counter() - run.partial.get("seconds", 0.0)
    pending, total, count = [], run.partial.get("loss_sum", 0.0), run.partial.get("loss_count", 0)
    run.partial = {}

    def sync(i):  # check the pending losses (and copy them to the host)
        nonlocal pending, total, count
        values = torch.stack(pending)
        values = (s.group.mean(values) if s.group is not None else values).cpu()
        _check_finite(values, epoch, run.step, i, s.num_batches, run.out_dir, run.saved_epoch)
        total, count, pending = total + float(values.sum()), count + len(values), []
        bar.update(len(values))
        bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.3f}")

    # the epoch's order is a function of (seed, epoch); a resumed epoch starts at run.batch;
    # padded sequences come cut to each batch's longest row (the masks keep the loss the same)
    i = run.batch - 1
    for i, batch in enumerate(s.source.epoch_batches(run.batch_size, shuffle=True, seed=run.seed, epoch=epoch,
                                                     start=run.batch, cut=True), start=run.batch):
        if i == s.num_batches:
            break
        if s.group is not None:  # this rank's rows; its loss weighted by its share
            batch, s.train_step.loss_scale = s.group.shard(batch)
        if s.transform is not None:
            batch = s.transform(batch)
        loss = s.step(batch, run.step)  # the objective's loss; zero_grad; backward; Adam step
        run.step += 1
        run.beat.step(epoch, i)
        pending.append(loss)
        if len(pending) == SYNC_EVERY or i == (s.num_batches or 0) - 1:
            sync(i)
            if _mid_epoch_checkpoint_due(run, i):
                _save(s, run, epoch, position={"epoch": epoch, "batch": i + 1, "partial": {
                    "loss_sum": total, "loss_count": count, "seconds": time.perf_counter() - t0}})
    if pending:
        sync(i)
    run.batch = 0
    if count == 0:
        raise DataError(f"the training data yielded no batch in epoch {epoch + 1}; an iterable "
                        "dataset or DataLoader must yield its datapoints again in every epoch")
    return {"epoch": epoch + 1, "step": run.step, "train_loss": total / count,
            "kl_weight": s.objective.kl_weight(run.step) if isinstance(s.objective, Objective) else 1.0,
            "seconds": time.perf_counter() - t0}


def _end_epoch(run: _Run, epoch: int, row: dict) -> None:
    """After epoch ``epoch``: the validation ELBO and monitors (every ``valid_every`` epochs and
    after the last) into ``row``, the row into the metrics, a line every ``log_every`` epochs,
    and the checkpoint with run.json and metrics.jsonl (all or none)."""
    s, opts, out_dir = run.s, run.s.opts, run.out_dir
    if s.valid is not None and opts.valid_every and ((epoch + 1) % opts.valid_every == 0 or epoch + 1 == run.epochs):
        t1 = time.perf_counter()
        # validation draws from a stream of its own: the training stream is left where it was, so
        # whether an epoch validates (a segment's last epoch always does) changes no later step, and a
        # resumed run trains exactly as one never interrupted. The same draws after every epoch (the
        # seed's): epochs are compared on common random numbers, so the best one is chosen by the
        # pair's change, not the draws' (docs/runs.md#the-best-validation-weights)
        with preserved_rng():
            torch.manual_seed(run.seed * VALID_SEED_STRIDE)
            row["valid_elbo"] = mean_elbo(s.model, s.guide, s.valid, batch_size=opts.valid_batch_size, split="valid")
        monitored = s.valid if isinstance(s.valid, dict) else head(s.valid, 1000)
        row.update(epoch_monitors(s.model, s.guide, monitored))  # active units, KL/dim, rate, MI
        row["valid_seconds"] = time.perf_counter() - t1
        _track_best(run, epoch + 1, row["valid_elbo"])
    run.metrics.append(row)
    if opts.log_every and (epoch + 1) % opts.log_every == 0 and s.is_main:
        tqdm.write(_describe(row, run.epochs), file=sys.stderr)
    run.epoch = epoch + 1
    if run.stopped:
        run.segment["stopped_early"] = {"epoch": epoch + 1, "best_epoch": run.best["epoch"],
                                        "best_valid_elbo": run.best["valid_elbo"], "patience": opts.patience}
        if s.is_main:
            tqdm.write(f"stopped early after epoch {epoch + 1}: no better validation ELBO than epoch "
                       f"{run.best['epoch']}'s ({run.best['valid_elbo']:.3f} nats) in {run.stale} validations "
                       f"(patience {opts.patience})", file=sys.stderr)
    if out_dir is not None and (run.stopped or _checkpoint_due(run, opts.checkpoint_seconds)):
        with interrupts_deferred():  # checkpoint, run.json and metrics: all or none
            _save(s, run, epoch + 1)
            if run.folder is not None:
                run.segment["completed_epoch"] = epoch + 1
                run.config["best"] = _best_record(run)
                write_json(out_dir / RUN_FILE, with_segments(run.config, run.saved, run.segment))
                write_metrics(out_dir / METRICS_FILE, run.metrics)
        run.ends_saved += 1


def _track_best(run: _Run, epoch: int, value: float) -> None:
    """After the validation of ``epoch``: a new best (its parameters copied, with
    ``keep_best``), or one more validation without (and ``stopped`` once ``patience`` of them)."""
    opts = run.s.opts
    if math.isfinite(value) and (run.best is None or value > run.best["valid_elbo"]):
        run.best, run.stale = {"epoch": epoch, "valid_elbo": float(value)}, 0
        run.best_state = parameter_state(run.s.model, run.s.guide, run.s.store_params, copy=True) if opts.keep_best else None
        return
    if _warming(run, run.step):  # the bound trained is not yet the one validated: patience waits
        return
    run.stale += 1
    run.stopped = bool(opts.patience) and run.stale >= opts.patience and epoch < run.epochs


def _warming(run: _Run, steps: int) -> bool:
    """Whether the objective's KL weight was still rising after ``steps`` steps: a validation
    then counts for the best weights but not against ``patience`` (the VRNN's and hvae's default
    warm-ups train a down-weighted KL for their first 1000 and 2500 steps)."""
    return steps < getattr(run.s.objective, "warmup_steps", 0)


def _resume_best(run: _Run, checkpoint: dict, out_dir) -> None:
    """On resume: the best validation ELBO so far, its parameters where the checkpoint holds
    them (or they are the ones just loaded), and the validations since it. A run that
    ``patience`` stopped is refused unless the patience is now larger (or 0)."""
    s, opts = run.s, run.s.opts
    best = checkpoint.get("best")
    if best is None:  # a checkpoint from before the best was kept: the metrics say where it was
        rows = [r for r in run.metrics if math.isfinite(r.get("valid_elbo", math.nan))]
        best = max(rows, key=lambda r: r["valid_elbo"]) if rows else None
        best = best and {"epoch": best["epoch"], "valid_elbo": best["valid_elbo"]}
    if best is None:
        return
    run.best = {"epoch": int(best["epoch"]), "valid_elbo": float(best["valid_elbo"])}
    if opts.keep_best:
        at_end = not (checkpoint.get("position") or {}).get("batch")
        run.best_state = best.get("parameters") or (parameter_state(s.model, s.guide, s.store_params, copy=True) if at_end and run.best["epoch"] == run.epoch
                                                    else None)
    run.stale = sum(1 for r in run.metrics if "valid_elbo" in r and r["epoch"] > run.best["epoch"]
                    and not _warming(run, r.get("step", math.inf)))
    if opts.patience and run.stale >= opts.patience:
        raise UsageError(f"cannot resume {out_dir}: its patience ({opts.patience}) has run out, no better validation "
                         f"ELBO than epoch {run.best['epoch']}'s in the {run.stale} validations to epoch {run.epoch}; "
                         f"pass a patience larger than {run.stale} (--patience N), or 0 for none, to train it further")


def _keep_best(run: _Run) -> int:
    """With ``keep_best``, load the best validation ELBO's parameters into the pair once the
    loop ends; the epoch whose weights the pair then holds."""
    if not run.s.opts.keep_best or run.best_state is None or run.best["epoch"] == run.epoch:
        return run.epoch
    load_parameters(run.best_state, run.s.model, run.s.guide, where="the best epoch's parameters")
    return run.best["epoch"]


def _best_record(run: _Run) -> Optional[dict]:
    return dict(run.best) if run.best is not None else None


def _checkpoint_due(run: _Run, seconds: float) -> bool:
    """Whether the epoch just ended is saved: the first of this segment, the last, and any that
    ends ``seconds`` or more after the previous checkpoint, at an epoch's end or within one
    (every rank decides alike: rank 0's clock is the one that counts in a data-parallel run, so
    it is asked there)."""
    if run.epoch == run.epochs or run.ends_saved == 0 or seconds <= 0:
        return True
    due = lambda: time.perf_counter() - run.saved_at >= seconds  # noqa: E731
    return bool(_on_main(run.s, due))


def _mid_epoch_checkpoint_due(run: _Run, i: int) -> bool:
    """Whether to save after batch ``i`` of an epoch, at a loss check, before the epoch's end:
    with an out_dir, in a one-process run, once :data:`MID_EPOCH_SECONDS` (or the
    ``checkpoint_seconds``, the larger) have passed since the last checkpoint (or the
    segment's start). A resume then starts at the next batch, exactly as the uninterrupted run
    goes on (the epoch's order is a function of ``(seed, epoch)``; the random state, the step and
    the epoch's loss so far are saved)."""
    s = run.s
    if run.folder is None or s.group is not None or (s.num_batches is not None and i + 1 >= s.num_batches):
        return False
    since = run.saved_at or run.started_at
    return time.perf_counter() - since >= max(MID_EPOCH_SECONDS, s.opts.checkpoint_seconds)


def _on_main(s: Setup, fn):
    """``fn()`` on this process, or on rank 0 with the result sent to every rank."""
    return fn() if s.group is None else s.group.on_main(fn)


def _open(folder: Checkpoints, resume: bool) -> None:
    folder.lock.acquire()  # RunLockedError if another process writes this run
    if resume and not folder.exists():
        raise NoRunError(f"cannot resume: {folder.folder} has no {CHECKPOINT_FILE}; start it without resume")
    if not resume and folder.exists():
        raise RunExistsError(f"{folder.folder} already holds a run; pass resume=True (--resume) to continue it, "
                             "or choose another out_dir")


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _save(s: Setup, run: _Run, epoch: int, position: Optional[dict] = None) -> None:
    """Checkpoint with ``epoch`` epochs done (rank 0 writes it, with every rank's random state),
    at ``position`` (default: the start of the next epoch; within an epoch, its next batch and
    the loss so far). :meth:`Checkpoints.save` holds Ctrl-C until it is written."""
    rng = rng_state()
    state = {**parameter_state(s.model, s.guide, s.store_params), "optimizer": s.optimizer.state_dict(), "rng": rng,
             "epoch": epoch, "step": run.step, "metrics": run.metrics, "example": s.example,
             # where the next batch comes from: the order is a function of (seed, epoch), so this is all
             "position": position or {"epoch": epoch, "batch": 0}}
    if run.best is not None:  # the best epoch's parameters where they are not those above
        state["best"] = dict(run.best)
        if run.best_state is not None and (run.best["epoch"] != epoch or position is not None):
            state["best"]["parameters"] = run.best_state
    if s.group is not None:  # every rank's stream, for an exact resume
        state["rng_ranks"] = s.group.gather(rng)
    if run.folder is not None:
        run.folder.save(state)
    if s.group is not None:
        s.group.barrier()
    run.saved_epoch, run.saved_at = epoch, time.perf_counter()


def _figures(s: Setup, model, guide, metrics: List[dict], out_dir: Path) -> List[Path]:
    """The figures ``pyrovae fit`` leaves (training curves; samples and reconstructions for
    image data); a figure that cannot be drawn is named on stderr, the run is kept."""
    from pyrovae.evaluation.plots import save_run_figures

    try:
        if s.dataset is not None and s.dataset.test is not None:
            data = s.dataset.test
        else:
            data = s.valid if s.valid is not None else (s.train if s.train is not None else s.source)
        data = head(data, 64, s.device)
        return save_run_figures(out_dir, model, guide, metrics, data, s.dataset.image_shape if s.dataset else None)
    except (ValueError, RuntimeError, KeyError) as error:
        print(f"pyrovae: figures not written: {' '.join(str(error).split())}", file=sys.stderr)
        return []


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
        f"the loss became {float(values[j])} at epoch {epoch + 1}, step {at_step} (batch {at_batch}"
        f"{f' of {num_batches}' if num_batches is not None else ''}); the run stopped. Last good checkpoint: {where}. Try a smaller lr or check the data."
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
    return rng_state()


def _describe(row: dict, epochs: int) -> str:
    text = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.3f}"
    if "valid_elbo" in row:
        text += f", valid ELBO {row['valid_elbo']:.3f}"
    return text + f" ({row['seconds']:.2f} s)"
