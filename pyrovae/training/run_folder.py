"""Run folders: what fit leaves behind, and :func:`load_run` to rebuild the pair from one.

A run folder holds::

    run.json             how to rebuild the pair, objective and data (names and options), and
                         the segments it was fit in (one per start or resume)
    checkpoint.pt        parameters, optimizer and random state after the last finished epoch, and
                         the parameters of the best validation ELBO's epoch where they differ
    checkpoint.prev.pt   the checkpoint before it (the fallback if the latest is unreadable)
    metrics.jsonl        one JSON object per finished epoch
    .lock                locked (flock) while a fit writes the folder
    *.png                samples, reconstructions, training curves

Files are written atomically (:mod:`pyrovae.training.files`), checkpoints rotated
(:mod:`pyrovae.training.checkpoint`); checkpoints load with ``torch.load(weights_only=True)``.
See docs/runs.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pyro
import torch

from pyrovae.errors import PyrovaeError
from pyrovae.training.checkpoint import (  # noqa: F401  (re-exported: their old home)
    PREV_CHECKPOINT_FILE, Checkpoints, load_checkpoint, save_checkpoint,
)
from pyrovae.training.files import (  # noqa: F401
    CHECKPOINT_FILE, METRICS_FILE, RUN_FILE, read_metrics, write_json, write_metrics,
)
from pyrovae.training.parameters import load_parameters


@dataclass
class Run:
    """A loaded run folder: the rebuilt pair with its trained parameters.

    :ivar model: the generative model (parameters loaded).
    :ivar guide: the guide (parameters loaded).
    :ivar dict config: the contents of run.json.
    :ivar list metrics: one dict per finished epoch.
    :ivar int weights_epoch: the epoch whose parameters were loaded (the best validation
        ELBO's, unless ``weights="last"`` or the run kept none).
    """

    path: Path
    model: Any
    guide: Any
    config: dict
    metrics: List[dict] = field(default_factory=list)
    example: Optional[dict] = None  # one row of a training batch (the checkpoint's), for shapes
    weights_epoch: Optional[int] = None

    def sample(self, num_samples: int = 1, **inputs) -> dict:
        """``num_samples`` draws of the model's generative process, z ~ p(z) and x ~ p(x | z),
        by :class:`pyro.infer.Predictive` (see :func:`~pyrovae.infer.predictive.prior_predictive`).

        :param inputs: tensors of ``num_samples`` rows that the model conditions on (a
            conditional model's input, labels), by their keyword names.
        :returns: ``{site: (num_samples, ...)}`` for every sample site of the model.
        :raises UsageError: the draws depend on an input not given (a conditional model, or a
            decoder that reads x itself, as ``pixelcnn-vae``'s does: use ``pyrovae sample``).
        """
        from pyrovae.infer.predictive import prior_predictive

        example = self.example
        if example is None and callable(getattr(self.model, "example_batch", None)):
            example = self.model.example_batch(1)  # a model of the suite knows its inputs' shapes
        if example is None:
            raise PyrovaeError(f"{self.path}: its checkpoint keeps no example row, so the model's inputs are "
                               "unknown; pass them: run.sample(n, x=...)")
        device = _device_of(self.model, self.guide)
        example = {k: v.to(device) for k, v in example.items()}
        return prior_predictive(self.model, example, num_samples, **{k: v.to(device) for k, v in inputs.items()})

    def posterior(self, data, num_samples: int = 1) -> dict:
        """Latents drawn from the guide, z ~ q(z | x), and every observed site drawn afresh
        given them, x' ~ p(x | z), by ``Predictive(uncondition(model), guide=guide)``.

        :param data: a tensor (passed as ``x``) or a dict of named tensors; rows are datapoints.
        :returns: ``{site: (num_samples, N, ...)}``.
        """
        from pyrovae.infer.predictive import posterior_predictive

        device = _device_of(self.model, self.guide)
        data = {k: v.to(device) for k, v in data.items()} if isinstance(data, dict) else data.to(device)
        return posterior_predictive(self.model, self.guide, data, num_samples)

    @property
    def data_name(self) -> Optional[str]:
        return (self.config.get("data") or {}).get("name")

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as the JSON file ``name`` of the run folder, atomically (as every file
        of a run is written); what ``pyrovae diagnose`` writes ``diagnostics.json`` with."""
        path = Path(self.path) / name
        write_json(path, obj)
        return path

    @property
    def epoch(self) -> int:
        """The last finished epoch (``weights_epoch`` is that of the parameters loaded)."""
        return int(self.metrics[-1]["epoch"]) if self.metrics else 0

    @property
    def epochs(self) -> Optional[int]:
        """The epochs the run was asked for (run.json), or None where unrecorded."""
        epochs = (self.config.get("fit") or {}).get("epochs")
        return int(epochs) if epochs is not None else None

    @property
    def stopped_early(self) -> bool:
        """Whether ``patience`` ended the run before its epochs (run.json's last segment says so)."""
        return bool(((self.config.get("segments") or [{}])[-1]).get("stopped_early"))

    @property
    def finished(self) -> bool:
        """Whether the run reached the epochs it was asked for, or stopped early by ``patience``
        (False for a fit killed early)."""
        return self.epochs is None or self.epoch >= self.epochs or self.stopped_early

    def __repr__(self) -> str:
        names = [(self.config.get(role) or {}).get("name") or "user's " + role for role in ("model", "guide")]
        data = self.data_name or ((self.config.get("data") or {}).get("files") or {}).get("path") or "tensors"
        of = f" of {self.epochs}" if self.epochs is not None else ""
        last = self.metrics[-1] if self.metrics else {}
        elbo = f", validation ELBO {last['valid_elbo']:.3f} nats" if "valid_elbo" in last else ""
        weights = f", weights of epoch {self.weights_epoch}" if self.weights_epoch not in (None, self.epoch) else ""
        return f"Run({str(self.path)!r}: {names[0]} + {names[1]} on {data}, epoch {self.epoch}{of}{elbo}{weights})"


def load_run(path, model=None, guide=None, device: str = "cpu", weights: str = "best") -> Run:
    """Rebuild a run's model and guide from the registry and load their parameters.

    The random streams are seeded with the run's seed before anything is built, so that two
    loads of one run are the same in every process. A pair of plain functions (``pyro.param``,
    ``pyro.module``) is passed in and gets its values back through Pyro's param store.

    :param path: the run folder.
    :param model: pass the model yourself if it is not a registered class.
    :param guide: likewise for the guide.
    :param str device: where to put the parameters.
    :param str weights: ``best``: the parameters of the best validation ELBO's epoch, the run's
        result (those of the last epoch where the run kept no other); ``last``: the last epoch's.
    """
    from pyrovae.registry import build, get_guide, get_model, import_hint, pair_guide, saved_options

    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    path = Path(path)
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {RUN_FILE}); pass the out_dir of a fit")
    if not Checkpoints(path).exists():  # run.json is written when the fit starts, the checkpoint later
        raise FileNotFoundError(f"{path} has no checkpoint: its fit stopped before its first checkpoint (the first epoch's end, or a minute into it); start the "
                                f"fit again with this out_dir (pyrovae fit ... --out {path})")
    config = json.loads(run_file.read_text())
    pyro.set_rng_seed(int((config.get("fit") or {}).get("seed", 0)))
    dims = (config.get("data") or {}).get("dims", {})
    for role, given, get in (("model", model, get_model), ("guide", guide, get_guide)):
        if given is None:
            spec = config.get(role)
            if spec is None:
                raise ValueError(
                    f"the run's {role} is not a registered class, so it cannot be rebuilt by name; "
                    f"pass {role}= to load_run"
                )
            try:
                factory = get(spec["name"])
            except ValueError:
                raise PyrovaeError(f"{path}: the run's {role} {spec['name']!r} is not registered in this process; "
                                   f"{import_hint(spec)}") from None
            built = build(factory, saved_options(factory, spec["options"]), fill=dims)
            if role == "model":
                model = built
            else:
                guide = built
    pair_guide(model, guide)  # a guide that reads its model (ladder) gets it
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    checkpoint = Checkpoints(path).load(map_location=device)
    best = checkpoint.get("best") or {}
    chosen = checkpoint
    if weights == "best" and best.get("parameters") is not None:
        chosen = {**best["parameters"], "example": checkpoint.get("example")}
    load_parameters(chosen, model, guide, where=str(path))
    weights_epoch = int(best["epoch"]) if chosen is not checkpoint else int(checkpoint.get("epoch", 0))
    return Run(path=path, model=model, guide=guide, config=config, metrics=read_metrics(path),
               example=checkpoint.get("example"), weights_epoch=weights_epoch)


def _device_of(*fns) -> torch.device:
    """Where the pair's parameters are (its modules', else the param store's; CPU if none)."""
    for fn in fns:
        if isinstance(fn, torch.nn.Module):
            for p in fn.parameters():
                return p.device
    for _, value in pyro.get_param_store().items():
        return value.device
    return torch.device("cpu")
