"""Training: fit's loop, its set-up, the step, run folders and checkpoints, CUDA graphs,
data-parallel. See docs/runs.md."""

from pyrovae.training.fit import FitResult, NonFiniteLossError, fit
from pyrovae.training.run_folder import Run, load_run
from pyrovae.training.setup import FitOptions

__all__ = ["FitOptions", "FitResult", "NonFiniteLossError", "Run", "fit", "load_run"]
