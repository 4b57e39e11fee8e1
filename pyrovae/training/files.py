"""The files of a run folder and how they are written: atomically, readable by others.

Every file goes to a temporary name in the same folder, is flushed and ``fsync``-ed, gets
the mode a plain ``open`` would give it (0644 under the usual umask; ``mkstemp`` alone
makes 0600) and is renamed into place (``os.replace`` is atomic on POSIX): a crash leaves
the old file or the new one, never a part. Ctrl-C (SIGINT) during a write is held until the
write is done (:func:`interrupts_deferred`), so an interrupted run still exits with its clean
message and a complete last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, List

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def interrupts_deferred():
    """Hold SIGINT (Ctrl-C) until the block ends, then deliver it to the handler that was in
    place (Python's default raises KeyboardInterrupt): a write is never cut in the middle, where
    torch's zip writer would turn the interrupt into a RuntimeError. Nests; a no-op outside the
    main thread (where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, received[0])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def atomic_write(path: Path, write: Callable, rename: bool = True):
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, chmod, rename.

    :param bool rename: False leaves the finished temporary file in place and returns its
        path (for a caller that rotates files itself).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred():
        return _atomic_write(path, write, rename)


def _atomic_write(path: Path, write: Callable, rename: bool):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if not rename:
            return tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_metrics(path: Path, rows: List[dict]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(path, lambda f: f.write(text.encode()))


def read_metrics(run_dir: Path) -> List[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
