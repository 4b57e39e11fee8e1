"""Checkpoints of a run folder: save with rotation, load with a fallback, a lock, RNG state.

A checkpoint is a dict of tensors, numbers, strings and lists (parameters, optimizer state,
random state, epoch, step, metrics), so it loads with ``torch.load(weights_only=True)``: a
file that carries code is refused, never executed. ``torch.save`` writes the whole storage
under a tensor, so a kept view of a larger tensor (one example row of the training data)
would carry all of it: :func:`own_storage` clones such views before every save, and a
checkpoint is about three times the parameters' bytes (parameters and Adam's two moments)
plus a few tens of kB (random state, metrics).

:class:`Checkpoints` keeps two files in the run folder::

    checkpoint.pt        the latest complete checkpoint
    checkpoint.prev.pt   the one before it

and rotates them so that at every instant ``checkpoint.pt`` is a complete file:

1. the new state goes to a temporary file in the same folder, flushed and ``fsync``-ed;
2. a hard link to the current ``checkpoint.pt`` replaces ``checkpoint.prev.pt``
   (``os.replace`` is atomic; ``checkpoint.pt`` itself is untouched);
3. the temporary file replaces ``checkpoint.pt`` (atomic), and the folder is ``fsync``-ed.

A ``kill -9`` at any point leaves the old or the new ``checkpoint.pt``, never a part of one.
On a file system without hard links step 2 renames ``checkpoint.pt`` to
``checkpoint.prev.pt``: between steps 2 and 3 only the previous file exists, and loading
falls back to it. A truncated or corrupt ``checkpoint.pt`` (a disk that lost its last
writes) is likewise replaced by ``checkpoint.prev.pt``, with one line on stderr.

:class:`RunLock` holds ``fcntl.flock`` on ``RUN/.lock`` for the whole fit: a second process
writing the same run gets :class:`~pyrovae.errors.RunLockedError`. The kernel drops the lock
when its process dies, so a lock file left by a killed run blocks nothing.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pyro.util
import torch

from pyrovae.errors import CheckpointError, RunLockedError
from pyrovae.training.files import CHECKPOINT_FILE, atomic_write, fsync_folder, interrupts_deferred

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

PREV_CHECKPOINT_FILE = "checkpoint.prev.pt"
LOCK_FILE = ".lock"


def own_storage(state):
    """``state`` with every tensor that is a view of a larger storage replaced by a clone
    (dicts, lists and tuples are walked), so that ``torch.save`` writes its bytes and no more.

    >>> rows = torch.zeros(1000, 10)
    >>> own_storage({"example": rows[:1]})["example"].untyped_storage().nbytes()
    40
    """
    if isinstance(state, torch.Tensor):
        if state.untyped_storage().nbytes() > state.numel() * state.element_size():
            return state.clone()
        return state
    if isinstance(state, dict):
        return {key: own_storage(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(own_storage(value) for value in state)
    return state


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename), views cloned
    (:func:`own_storage`)."""
    state = own_storage(state)
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location=None) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    :raises FileNotFoundError: no file at ``path``.
    :raises CheckpointError: a truncated or corrupt file, one that carries code (refused,
        never executed) or one that is not a pyrovae checkpoint; the message is one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; was the run started with this out_dir?")
    fix = "resume from checkpoint.prev.pt if the folder has one, or start a new run"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # weights_only met a class or function to import
            raise CheckpointError(f"{path} carries code (pickled objects other than tensors, numbers and "
                                  f"strings), which is never executed; {fix}") from None
        raise CheckpointError(f"{path} is truncated or corrupt (not a file torch.save wrote); {fix}") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({_first_line(error) or type(error).__name__}); "
                              f"{fix}") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (no 'epoch' entry); {fix}")
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else ""


# ---------------------------------------------------------------- random state


def rng_state() -> dict:
    """torch, Python and numpy random state (``pyro.util.get_rng_state``) plus CUDA's, as
    tensors, lists and numbers only (what ``weights_only`` loading accepts)."""
    state = pyro.util.get_rng_state()
    name, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss = state["random"]
    out = {"torch": state["torch"],
           "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
           "random": [version, list(internal), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (older checkpoints name Python's ``python``)."""
    name, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss = state["random"] if "random" in state else state["python"]
    pyro.util.set_rng_state({
        "torch": state["torch"].cpu(),
        "random": (version, tuple(internal), gauss),
        "numpy": (name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached),
    })
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---------------------------------------------------------------- lock and rotation


class RunLock:
    """``fcntl.flock`` on ``folder/.lock`` (the file holds the owner's pid, for messages)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        if fcntl is None or self.fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.folder} is being written by another process (pid {owner}); wait for it "
                                 "to finish, or choose another out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Checkpoints:
    """The checkpoints of one run folder: lock, rotate, load with a fallback.

    :param Path folder: the run folder.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / CHECKPOINT_FILE
        self.prev = self.folder / PREV_CHECKPOINT_FILE
        self.lock = RunLock(self.folder)

    def exists(self) -> bool:
        return self.path.is_file() or self.prev.is_file()

    def save(self, state: Dict[str, Any]) -> None:
        """Write ``state`` as the new ``checkpoint.pt``; the old one becomes ``checkpoint.prev.pt``
        (Ctrl-C is held until both are in place)."""
        with interrupts_deferred():
            self._save(state)

    def _save(self, state: Dict[str, Any]) -> None:
        state = own_storage(state)
        tmp = atomic_write(self.path, lambda f: torch.save(state, f), rename=False)
        try:
            if self.path.is_file():
                self._keep_previous()
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_folder(self.folder)

    def _keep_previous(self) -> None:
        link = self.folder / f".{PREV_CHECKPOINT_FILE}.{os.getpid()}"
        try:
            if link.exists():
                link.unlink()
            os.link(self.path, link)
        except OSError:  # no hard links here: rename (loading falls back to prev meanwhile)
            os.replace(self.path, self.prev)
            return
        os.replace(link, self.prev)

    def load(self, map_location=None) -> Dict[str, Any]:
        """The latest readable checkpoint: ``checkpoint.pt``, else ``checkpoint.prev.pt`` with a
        one-line message on stderr."""
        try:
            return load_checkpoint(self.path, map_location=map_location)
        except (CheckpointError, FileNotFoundError) as error:
            if not self.prev.is_file():
                raise
            state = load_checkpoint(self.prev, map_location=map_location)
            reason = str(error).split(";")[0]
            print(f"pyrovae: {reason}; resuming from {self.prev} (epoch {state['epoch']})", file=sys.stderr)
            return state

    def tidy(self) -> None:
        """After an interruption: leave a complete ``checkpoint.pt`` (restored from
        ``checkpoint.prev.pt`` if a rename was cut short) and no temporary files."""
        for stray in self.folder.glob(f".{CHECKPOINT_FILE}.*"):
            stray.unlink(missing_ok=True)
        for stray in self.folder.glob(f".{PREV_CHECKPOINT_FILE}.*"):
            stray.unlink(missing_ok=True)
        if not self.path.is_file() and self.prev.is_file():
            try:
                os.link(self.prev, self.path)
            except OSError:
                shutil.copyfile(self.prev, self.path)
