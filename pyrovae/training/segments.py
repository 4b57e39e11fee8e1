"""run.json: what a run is (pair, data) and the segments it was fit in.

A run is fit in one or more *segments*: the first start, then one per resume. What fixes
the parameters' shapes and the data (the model's and guide's names and options, the data
set's name, binarization and dimensions) is the same in every segment: a resume that
changes it is refused (:func:`check_resumable`). What may change between segments (the
objective and its options, lr, batch size, epochs, seed, device, precision, threads) is
recorded per segment. The top-level ``objective`` and ``fit`` keys describe the latest.

>>> check_resumable({"model": {"name": "vae", "options": {"z_dim": 2}}},
...                 {"model": {"name": "vae", "options": {"z_dim": 8}}}, "runs/x")
Traceback (most recent call last):
...
pyrovae.errors.UsageError: cannot resume runs/x with z_dim=8: it was fit with z_dim=2; start a new run (another out_dir)
"""

from __future__ import annotations

import time
from typing import Optional

from pyrovae.errors import UsageError

_MISSING = object()


def _differences(saved: dict, new: dict):
    """``(option, saved value, new value)`` for what fixes shapes and data."""
    for role in ("model", "guide"):
        old, now = saved.get(role), new.get(role)
        if old is None or now is None:  # a plain-function pair: its shapes are checked on loading
            continue
        if old["name"] != now["name"]:
            yield role, old["name"], now["name"]
            continue
        for key in sorted(set(old["options"]) | set(now["options"])):
            a, b = old["options"].get(key, _MISSING), now["options"].get(key, _MISSING)
            if a is not _MISSING and b is not _MISSING and a != b:
                yield key, a, b
    old, now = saved.get("data") or {}, new.get("data") or {}
    for key, label in (("name", "data"), ("binarize", "binarize")):
        if old.get(key) != now.get(key):
            yield label, old.get(key), now.get(key)
    for key in sorted(set(old.get("dims") or {}) & set(now.get("dims") or {})):
        if old["dims"][key] != now["dims"][key]:
            yield key, old["dims"][key], now["dims"][key]


def check_resumable(saved: dict, new: dict, where) -> None:
    """Refuse to resume the run in ``where`` (saved config) with a config that changes the
    parameters' shapes or the data.

    :raises UsageError: naming the first option that differs and both values.
    """
    for option, old, now in _differences(saved, new):
        raise UsageError(f"cannot resume {where} with {option}={now!r}: it was fit with {option}={old!r}; "
                         "start a new run (another out_dir)")


def segment(run_config: dict, start_epoch: int, end_epoch: int, threads: Optional[int] = None) -> dict:
    """One segment's record: what it ran and from which epoch to which."""
    fit = run_config["fit"]
    record = {"epochs": [start_epoch, end_epoch], "completed_epoch": start_epoch,
              "objective": run_config.get("objective"),
              **{k: fit[k] for k in ("lr", "batch_size", "seed", "device", "precision", "processes") if k in fit},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if threads is not None:
        record["threads"] = threads
    return record


def with_segments(run_config: dict, saved: Optional[dict], current: dict) -> dict:
    """run.json's contents: ``run_config`` (this segment's view) with the earlier segments
    of ``saved`` and ``current`` appended."""
    earlier = list((saved or {}).get("segments") or [])
    if saved is not None and not earlier:  # a run written before segments were recorded
        fit = saved.get("fit") or {}
        earlier = [{"epochs": [0, fit.get("epochs")], "objective": saved.get("objective"),
                    **{k: fit[k] for k in ("lr", "batch_size", "seed", "device", "precision") if k in fit}}]
    return {**(saved or {}), **run_config, "segments": earlier + [current]}
