"""pyrovae: variational autoencoders as Pyro programs.

Generative models are Pyro model functions, amortized encoders are Pyro guides, and any
pair is fit with :func:`fit`, scored with :func:`log_likelihood` and reloaded with
:func:`load_run`.
"""

__version__ = "0.1.0"

from pyrovae.ais import AISEstimate, ais_log_likelihood
from pyrovae.bdmc import BDMCResult, bdmc
from pyrovae.diagnostics import khat_summary, psis_diagnostic, psis_khat, to_inference_data
from pyrovae.evaluate import LogLikelihood, elbo, log_likelihood
from pyrovae.gap import InferenceGap, inference_gap
from pyrovae.monitors import LatentMonitors, latent_monitors
from pyrovae.objectives import ELBO, IWAE, MeanFieldELBO, Objective, RenyiBound, make_objective
from pyrovae.registry import (
    get_guide, get_model, get_objective, list_guides, list_models, list_objectives,
    register_guide, register_model, register_objective,
)
from pyrovae.run import Run, load_run
from pyrovae.train import FitResult, NonFiniteLossError, fit
from pyrovae.weights import log_weights

__all__ = [
    "ELBO", "FitResult", "IWAE", "LogLikelihood", "MeanFieldELBO", "NonFiniteLossError", "Objective",
    "RenyiBound", "Run", "elbo", "fit", "get_guide", "get_model", "get_objective", "list_guides",
    "list_models", "list_objectives", "load_run", "log_likelihood", "log_weights", "make_objective",
    "register_guide", "register_model", "register_objective",
    "AISEstimate", "BDMCResult", "InferenceGap", "LatentMonitors", "ais_log_likelihood", "bdmc",
    "inference_gap", "khat_summary", "latent_monitors", "psis_diagnostic", "psis_khat", "to_inference_data",
]
