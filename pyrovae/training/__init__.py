"""Training: fit's loop, the step, run folders and checkpoints, CUDA graphs, data-parallel."""

from pyrovae.training.fit import FitResult, NonFiniteLossError, fit
from pyrovae.training.run_folder import Run, load_run

__all__ = ["FitResult", "NonFiniteLossError", "Run", "fit", "load_run"]
