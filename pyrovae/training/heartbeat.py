"""Lines that show a slow fit is alive where no progress bar is drawn (stderr not a terminal:
a log file, ``nohup``, a batch job).

The first :data:`WARMUP_STEPS` steps after an epoch's first are not timed: they run eagerly
and the step is recorded for replay on the last of them (pyrovae/training/replay.py), several
times slower than the steps that follow (the default ``vae`` on ``digits``, one thread under
load: 69 ms a step against 11). After the next :data:`FIRST_STEPS` steps, a fit that will take longer than
:data:`LONG` seconds says what a step takes and what the epoch and the fit will take; then a
line every ``every`` seconds (:data:`EVERY` by default) says where it is:

.. code-block:: text

    fit: 4.1 s per step (steps 5-7); an epoch of 420 steps takes about 29 min, the fit (10 epochs) about 4.8 h
    fit: epoch 1/10, step 15/420, 4.0 s per step; the epoch ends in about 27 min, the fit in about 4.7 h

>>> lines = []
>>> clock = iter(range(0, 1000, 5)).__next__  # a step takes 5 s
>>> beat = Heartbeat(epochs=2, steps_per_epoch=20, enabled=True, every=60, write=lines.append, clock=clock)
>>> for i in range(20):
...     beat.step(0, i)
>>> print("\\n".join(lines))
fit: 5.0 s per step (steps 5-7); an epoch of 20 steps takes about 2 min, the fit (2 epochs) about 3 min
fit: epoch 1/2, step 19/20, 5.0 s per step; the epoch ends in about 5 s, the fit in about 2 min

A step under a second is said in milliseconds:

>>> lines = []
>>> clock = iter(x / 1000 for x in range(0, 10 ** 6, 40)).__next__  # a step takes 40 ms
>>> beat = Heartbeat(epochs=500, steps_per_epoch=12, enabled=True, write=lines.append, clock=clock)
>>> for i in range(8):
...     beat.step(0, i)
>>> lines
['fit: 40 ms per step (steps 5-7); an epoch of 12 steps takes under 1 s, the fit (500 epochs) about 4 min']
"""

from __future__ import annotations

import time
from typing import Callable, Optional

WARMUP_STEPS = 3  # steps after the first not timed: eager, then the replay's recording
FIRST_STEPS = 3  # steps timed before the first estimate
LONG = 60.0  # a fit projected to take longer than this many seconds prints the estimate
EVERY = 60.0  # seconds between two lines


def duration(seconds: float) -> str:
    """``"42 s"``, ``"29 min"``, ``"4.8 h"``.

    >>> duration(0.4), duration(42.4), duration(1740), duration(17280)
    ('under 1 s', '42 s', '29 min', '4.8 h')
    """
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def about(seconds: float) -> str:
    """``"about 42 s"``, or ``"under 1 s"``."""
    text = duration(seconds)
    return text if text.startswith("under") else f"about {text}"


def per_step(seconds: float) -> str:
    """``"2.2 s"``, or milliseconds under a second: ``"40 ms"``.

    >>> per_step(2.24), per_step(0.04), per_step(0.0004)
    ('2.2 s', '40 ms', '0.4 ms')
    """
    if seconds >= 0.95:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.00095 else f"{seconds * 1000:.1f} ms"


class Heartbeat:
    """Call :meth:`step` after each optimizer step; it writes the lines described above.

    :param int epochs: the epochs of the fit.
    :param steps_per_epoch: steps in one epoch (None: unknown, an iterable data set).
    :param bool enabled: False makes every call do nothing.
    :param float every: seconds between two lines (default :data:`EVERY`).
    :param write: where a line goes (default: print to stderr).
    :param clock: the time source (seconds).
    """

    def __init__(self, epochs: int, steps_per_epoch: Optional[int], enabled: bool, every: Optional[float] = None,
                 write: Optional[Callable[[str], None]] = None, clock: Callable[[], float] = time.perf_counter):
        self.epochs, self.steps_per_epoch, self.enabled = epochs, steps_per_epoch, enabled
        self.every = EVERY if every is None else every
        self.write = write or _stderr
        self.clock = clock
        self.epoch, self.start, self.steps, self.estimated, self.last = None, 0.0, 0, False, 0.0
        self.warm = 0  # steps not timed so far (WARMUP_STEPS in all, in this process)

    def step(self, epoch: int, batch: int) -> None:
        """After the step on batch ``batch`` (0-based) of epoch ``epoch`` (0-based)."""
        if not self.enabled:
            return
        now = self.clock()
        if epoch != self.epoch:  # time each epoch's steps from its first (the validation pass is not a step)
            self.epoch, self.start, self.steps, self.last = epoch, now, 0, now
            return
        if self.warm < WARMUP_STEPS:  # eager steps and the recording: slower than the rest
            self.warm += 1
            self.start = self.last = now
            return
        self.steps += 1
        rate = (now - self.start) / self.steps
        epoch_left, fit_left = self._left(epoch, batch, rate)
        if not self.estimated and self.steps >= FIRST_STEPS:
            self.estimated = True
            whole = fit_left + (batch + 1) * rate
            if whole > LONG:
                per_epoch = (f"an epoch of {self.steps_per_epoch} steps takes "
                             f"{about(self.steps_per_epoch * rate)}, " if self.steps_per_epoch else "")
                self.write(f"fit: {per_step(rate)} per step (steps {batch + 2 - self.steps}-{batch + 1}); {per_epoch}the fit "
                           f"({self.epochs} epoch{'s' if self.epochs != 1 else ''}) {about(whole) if self.steps_per_epoch else 'unknown'}")
                self.last = now
            return
        if self.estimated and now - self.last >= self.every:
            self.last = now
            where = f"step {batch + 1}/{self.steps_per_epoch}" if self.steps_per_epoch else f"step {batch + 1}"
            ends = (f"; the epoch ends in {about(epoch_left)}, the fit in {about(fit_left)}"
                    if self.steps_per_epoch else "")
            self.write(f"fit: epoch {epoch + 1}/{self.epochs}, {where}, {per_step(rate)} per step{ends}")

    def _left(self, epoch: int, batch: int, rate: float):
        if not self.steps_per_epoch:
            return 0.0, 0.0
        epoch_left = (self.steps_per_epoch - batch - 1) * rate
        return epoch_left, epoch_left + (self.epochs - epoch - 1) * self.steps_per_epoch * rate


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)
