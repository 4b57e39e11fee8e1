"""pyrovae: variational autoencoders as Pyro programs.

Generative models are Pyro model functions, amortized encoders are Pyro guides, and any
pair is fit with :func:`fit`, scored with :func:`log_likelihood` and reloaded with
:func:`load_run`.

The parts depend one way (docs/architecture.md), from the bottom up: ``errors``,
``registry`` (passive name -> factory tables), ``nn`` / ``distributions``, ``data``,
``infer`` (importance core, objectives), ``models``, ``guides``, ``evaluation``,
``training`` (step, loop, run folder), this file (which registers the built-ins by
importing them, once), ``bench``, ``cli``.
"""

__version__ = "0.1.0"

from pyrovae.evaluation import (
    AISEstimate, BDMCResult, InferenceGap, LatentMonitors, LogLikelihood, ais_log_likelihood, bdmc, elbo,
    PairedDifference, inference_gap, khat_summary, latent_monitors, log_likelihood, paired_difference, psis_diagnostic,
    psis_khat, to_inference_data,
)
from pyrovae.infer import ELBO, IWAE, MeanFieldELBO, Objective, RenyiBound, log_weights, make_objective
from pyrovae.registry import (
    get_guide, get_model, get_objective, list_guides, list_models, list_objectives,
    register_guide, register_model, register_objective,
)
from pyrovae.training import FitResult, NonFiniteLossError, Run, fit, load_run

# the built-ins register themselves on import (the registry imports nothing it registers)
import pyrovae.infer.stein  # noqa: E402,F401  (the "stein" objective)
import pyrovae.infer.mmd  # noqa: E402,F401  (the "infovae" objective)
import pyrovae.models  # noqa: E402,F401
import pyrovae.guides  # noqa: E402,F401

__all__ = [
    "ELBO", "FitResult", "IWAE", "LogLikelihood", "MeanFieldELBO", "NonFiniteLossError", "Objective",
    "RenyiBound", "Run", "elbo", "fit", "get_guide", "get_model", "get_objective", "list_guides",
    "list_models", "list_objectives", "load_run", "log_likelihood", "log_weights", "make_objective",
    "register_guide", "register_model", "register_objective",
    "AISEstimate", "BDMCResult", "InferenceGap", "LatentMonitors", "ais_log_likelihood", "bdmc",
    "PairedDifference", "inference_gap", "khat_summary", "latent_monitors", "paired_difference", "psis_diagnostic", "psis_khat", "to_inference_data",
]
