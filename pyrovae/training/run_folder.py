"""Run folders: what fit leaves behind, written so that a crash never corrupts it.

A run folder holds::

    run.json          how to rebuild the pair, objective and data (names and options)
    checkpoint.pt     parameters, optimizer and RNG state after the last finished epoch
    metrics.jsonl     one JSON object per finished epoch
    *.png             figures written by the CLI

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), and checkpoints hold only tensors, numbers and strings,
so they load with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


def _atomic_write(path: Path, write: Callable) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_metrics(path: Path, rows: List[dict]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location=None) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; was the run started with this out_dir?")
    return torch.load(path, map_location=map_location, weights_only=True)


def read_metrics(run_dir: Path) -> List[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def load_run(path, model=None, guide=None, device: str = "cpu") -> Run:
    """Rebuild a run's model and guide from the registry and load their parameters.

    :param path: the run folder.
    :param model: pass the model yourself if it is not a registered class.
    :param guide: likewise for the guide.
    :param str device: where to put the parameters.
    """
    from pyrovae.registry import build, get_guide, get_model
    from pyrovae.training.fit import load_parameters

    path = Path(path)
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {RUN_FILE}); pass the out_dir of a fit")
    config = json.loads(run_file.read_text())
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
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    checkpoint = load_checkpoint(path / CHECKPOINT_FILE, map_location=device)
    load_parameters(checkpoint, model, guide)
    return Run(path=path, model=model, guide=guide, config=config, metrics=read_metrics(path))
