"""What the benchmark scripts share: their common flags, the line that says which machine
ran them, JSON files and Markdown tables.

A script (``python benchmarks/NAME.py``; its folder is on ``sys.path``) builds its parser with
the common flags it takes and their defaults, adds its own, and reports with the helpers:

    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, lr=1e-3, seed=0, threads=1, json=None)
    p.add_argument("--guides", nargs="+", default=["diag", "iaf"])
    args = p.parse_args()
    machine = _harness.start(args)             # torch's threads from --threads; "x86_64 CPU (2 cores), 1 torch thread(s)"
    ...
    _harness.write_json(args.json, {"machine": machine, "args": vars(args), "rows": rows})
    print(_harness.table(["guide", "test log p(x)"], [[r["guide"], f"{r['ll']:.2f}"] for r in rows]))

Not a test and not part of the package: the scripts' figures are theirs (docs/*.md quote them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import torch

#: the default of ``--data-dir``: the folder named by $PYROVAE_DATA (None: the standard places)
DATA_DIR = os.environ.get("PYROVAE_DATA")

#: the common flags: option name -> (type, help); "ints" takes one or more integers
FLAGS = {
    "data_dir": (str, "folder holding the data sets (default: $PYROVAE_DATA, else the standard places)"),
    "epochs": (int, "training epochs"),
    "batch_size": (int, "datapoints per step"),
    "lr": (float, "Adam's learning rate"),
    "z_dim": (int, "latent dimension"),
    "hidden_dims": ("ints", "hidden widths"),
    "num_samples": (int, "K, importance samples per datapoint for the test log-likelihood"),
    "train_size": (int, "train on the first N training rows only (None: all)"),
    "test_size": (int, "test rows scored (the first N)"),
    "seed": (int, "seeds the weights, the batches and every draw"),
    "threads": (int, "torch CPU threads (None: torch's choice)"),
    "device": (str, "cpu or cuda"),
    "json": (Path, "also write the results to this JSON file"),
    "figure": (Path, "write the figure to this PNG file"),
}


def parser(doc: Optional[str], **defaults) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` described by the script's docstring ``doc``, with the common flags
    named in ``defaults`` (``epochs=10`` adds ``--epochs``, default 10), in that order."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        kind, text = FLAGS[name]
        flag = "--" + name.replace("_", "-")
        if kind == "ints":
            p.add_argument(flag, type=int, nargs="+", default=default, help=f"{text} (default: {default})")
        else:
            p.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    return p


def start(args: argparse.Namespace) -> str:
    """Set torch's CPU threads from ``args.threads`` (where given) and return :func:`machine`."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return machine(getattr(args, "device", None))


def machine(device=None) -> str:
    """Which machine ran a benchmark, for its table: the CPU (or the GPU) and torch's threads."""
    if device is not None and torch.device(device).type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} GPU"
    else:
        where = f"CPU ({os.cpu_count()} cores)"
    return f"{platform.machine()} {where}, {torch.get_num_threads()} torch thread(s)"


def jsonable(value):
    """``value`` with tensors and arrays as lists and paths as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if torch.is_tensor(value):
        return jsonable(value.tolist())
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, obj, lines: bool = False) -> None:
    """Write ``obj`` (made :func:`jsonable`) to ``path``, or nothing where ``path`` is None;
    ``lines``: ``obj`` is a list written one JSON object a line."""
    if path is None:
        return
    if lines:
        text = "".join(json.dumps(jsonable(row)) + "\n" for row in obj)
    else:
        text = json.dumps(jsonable(obj), indent=1) + "\n"
    Path(path).write_text(text)


def summary(row: dict, *drop: str) -> dict:
    """``row`` without the entries whose names start with one of ``drop`` (default: the
    per-datapoint arrays), as a script prints after each configuration."""
    drop = drop or ("per_datapoint",)
    return {k: v for k, v in row.items() if not k.startswith(drop)}


def header(columns: Sequence[str]) -> List[str]:
    """The first two lines of a Markdown table: the column names and the ``|---|`` line."""
    return ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]


def table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table: :func:`header`, then one line per row."""
    return "\n".join(header(columns) + ["| " + " | ".join(map(str, row)) + " |" for row in rows])
