"""Run folders: what fit leaves behind, and :func:`load_run` to rebuild the pair from one.

A run folder holds::

    run.json             how to rebuild the pair, objective and data (names and options), and
                         the segments it was fit in (one per start or resume)
    checkpoint.pt        parameters, optimizer and random state after the last finished epoch
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
    """

    path: Path
    model: Any
    guide: Any
    config: dict
    metrics: List[dict] = field(default_factory=list)

    @property
    def data_name(self) -> Optional[str]:
        return (self.config.get("data") or {}).get("name")

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as the JSON file ``name`` of the run folder, atomically (as every file
        of a run is written); what ``pyrovae diagnose`` writes ``diagnostics.json`` with."""
        path = Path(self.path) / name
        write_json(path, obj)
        return path


def load_run(path, model=None, guide=None, device: str = "cpu") -> Run:
    """Rebuild a run's model and guide from the registry and load their parameters.

    The random streams are seeded with the run's seed before anything is built, so that two
    loads of one run are the same in every process. A pair of plain functions (``pyro.param``,
    ``pyro.module``) is passed in and gets its values back through Pyro's param store.

    :param path: the run folder.
    :param model: pass the model yourself if it is not a registered class.
    :param guide: likewise for the guide.
    :param str device: where to put the parameters.
    """
    from pyrovae.registry import build, get_guide, get_model, pair_guide

    path = Path(path)
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {RUN_FILE}); pass the out_dir of a fit")
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
            built = build(get(spec["name"]), spec["options"], fill=dims)
            if role == "model":
                model = built
            else:
                guide = built
    pair_guide(model, guide)  # a guide that reads its model (ladder) gets it
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    checkpoint = Checkpoints(path).load(map_location=device)
    load_parameters(checkpoint, model, guide, where=str(path))
    return Run(path=path, model=model, guide=guide, config=config, metrics=read_metrics(path))
