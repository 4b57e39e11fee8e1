"""The whole training step captured in a CUDA graph and replayed per batch.

A Pyro step on a GPU spends most of its time in Python (the effect handlers, the
distributions, kernel launches), not in arithmetic. When the step is static (same shapes,
no host synchronization, no step-dependent constants), its kernels can be recorded once,
forward, backward and the optimizer's update together, and replayed for every batch with
one launch [1]:

- the batch is copied into static input buffers, ``graph.replay()`` runs the step, and the
  loss is read from a static output;
- random draws stay correct: ``torch.cuda.graph`` registers the default CUDA generator, and
  every replay advances its Philox offset, so each replay draws new noise;
- the optimizer keeps its step count on the device (``Adam(fused=True, capturable=True)``).

:class:`GraphedStep` wraps a :class:`~pyrovae.training.step.TrainStep`. It runs ``warmup`` steps
eagerly on a side stream (lazy initializations, the optimizer's state), watching for
synchronizing CUDA calls (``torch.cuda.set_sync_debug_mode``), then captures. It runs a
step eagerly, and always correctly, whenever the graph does not apply: a batch of another
shape (the last, partial one), a step before ``static_from`` (a KL warm-up changes a constant
every step), a step that synchronizes with the host, or a capture that fails; the last two
switch the graph off for the rest of the run, with a warning.

>>> step = GraphedStep(lambda batch, step: batch["x"].sum(), enabled=False)
>>> float(step({"x": torch.ones(3)}, 0))
3.0

References

[1] NVIDIA. CUDA C++ Programming Guide, "CUDA Graphs"; PyTorch, "CUDA Graphs"
    (torch.cuda.graph, whole-network capture).
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Optional

import torch



#: What torch's sync debug mode says of each synchronizing call (c10/cuda/CUDAFunctions.cpp).
SYNC_WARNING = "called a synchronizing CUDA operation"
#: What it says, once per process, when the mode is first switched on: not a sync.
SYNC_MODE_NOTICE = "Synchronization debug mode is a prototype feature"


def sort_sync_warnings(caught):
    """Split warnings caught under ``torch.cuda.set_sync_debug_mode("warn")`` into the host
    syncs and the step's own warnings; torch's one-off notice about the mode is neither."""
    syncs = [w for w in caught if SYNC_WARNING in str(w.message)]
    others = [w for w in caught if SYNC_WARNING not in str(w.message) and SYNC_MODE_NOTICE not in str(w.message)]
    return syncs, others

class GraphedStep:
    """Replay a captured training step for every full-size batch.

    :param callable step: ``step(batch, step_index) -> detached loss``; it must do the whole
        update (forward, backward, optimizer step) and zero the gradients with
        ``set_to_none=True`` before the backward pass.
    :param bool enabled: capture at all (False: every call is eager).
    :param int warmup: eager steps before the capture (at least 1).
    :param int static_from: the first step index from which the step does not depend on it.
    :param callable on_fallback: called with a message when the graph is switched off.
    """

    def __init__(self, step: Callable, *, enabled: bool = True, warmup: int = 3, static_from: int = 0,
                 on_fallback: Optional[Callable[[str], None]] = None):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (lazy initializations happen before capture), got {warmup}")
        self.step, self.enabled, self.warmup, self.static_from = step, enabled, warmup, static_from
        self.on_fallback = on_fallback or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
        self.graph = None
        self.static_batch: Optional[Dict[str, torch.Tensor]] = None
        self.static_loss: Optional[torch.Tensor] = None
        self.signature = None
        self.warmed = 0
        self.replays = 0
        self.eager_steps = 0

    def __call__(self, batch: Dict[str, torch.Tensor], step: int) -> torch.Tensor:
        if not static_step(self, batch, step):
            return self._eager(batch, step)
        if self.graph is None:
            if self.warmed < self.warmup:
                return self._warmup(batch, step)
            if not self._capture(batch, step):
                return self._eager(batch, step)
        for key, value in batch.items():
            self.static_batch[key].copy_(value)
        self._replay()
        self.replays += 1
        return self.static_loss.clone()

    # ---- the pieces, each replaceable in tests -------------------------------------------

    def _eager(self, batch, step):
        self.eager_steps += 1
        return self.step(batch, step)

    def _warmup(self, batch, step):
        """An eager step on a side stream; the last one also checks for host syncs."""
        self.warmed += 1
        check = self.warmed == self.warmup
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        caught = []
        with torch.cuda.stream(stream):
            if not check:
                loss = self.step(batch, step)
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        loss = self.step(batch, step)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                syncs, others = sort_sync_warnings(caught)
                for w in others:  # pass the step's own warnings on
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        torch.cuda.current_stream().wait_stream(stream)
        syncs = sort_sync_warnings(caught)[0]
        if syncs:
            self._switch_off(f"the training step synchronizes with the host ({syncs[0].message}); "
                             "it cannot be captured in a CUDA graph and runs eagerly")
        return loss

    def _capture(self, batch, step) -> bool:
        """Capture the step on copies of ``batch``; False (and eager from now on) if it fails.
        Nothing runs during a capture, so the caller then replays (or runs) this batch."""
        self.static_batch = {key: value.clone() for key, value in batch.items()}
        try:
            self.graph, self.static_loss = self._record(self.static_batch, step)
        except Exception as error:  # noqa: BLE001 - any failure means: do not use the graph
            self._recover()
            self._switch_off(f"CUDA graph capture of the training step failed ({type(error).__name__}: {error}); "
                             "training continues eagerly")
            self.static_batch = self.static_loss = None
            return False
        return True

    def _record(self, static_batch, step):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = self.step(static_batch, step)
        return graph, static_loss

    def _recover(self):
        torch.cuda.synchronize()

    def _replay(self):
        self.graph.replay()

    def _switch_off(self, message: str):
        self.enabled = False
        self.graph = None
        self.on_fallback(message)


def static_step(stepper, batch: Dict[str, torch.Tensor], step: int) -> bool:
    """Whether a recorded step (this CUDA graph, or the CPU replay of
    :mod:`pyrovae.training.replay`) may run this step: it is switched on, the step is at or past
    ``static_from`` and the batch has the signature of the first one it saw (the last, smaller
    batch of an epoch runs eagerly). ``stepper`` holds ``enabled``, ``static_from`` and
    ``signature`` (set here on the first eligible step)."""
    if not stepper.enabled or step < stepper.static_from:
        return False
    signature = _signature(batch)
    if stepper.signature is None:
        stepper.signature = signature
    return signature == stepper.signature


def _signature(batch: Dict[str, torch.Tensor]) -> tuple:
    return tuple((key, tuple(value.shape), value.dtype, value.device) for key, value in batch.items())


def graph_safe(objective) -> bool:
    """Whether ``objective`` may be captured: one of the suite's own objectives (a subclass
    or plain callable may read the step or the data on the host)."""
    from pyrovae.infer.objectives import Objective

    cls = type(objective)
    if getattr(objective, "particle_chunk", 0):  # checkpointed chunks read the RNG state on the host
        return False
    return isinstance(objective, Objective) and all(
        c.__module__ == Objective.__module__ for c in cls.__mro__ if issubclass(c, Objective))


def static_from(objective) -> int:
    """The first step from which the objective's KL weight stays constant."""
    warmup = getattr(objective, "warmup_steps", 0)
    return max(0, warmup - 1)
